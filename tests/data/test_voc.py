"""VOCDataset: round trip with the synthetic writer, 07+12, difficult, box convention, bad files."""
import os

import cv2
import numpy as np
import pytest
import torch

from dcn_det.data.synthetic import SyntheticDataset, write_voc
from dcn_det.data.voc import VOC_CLASSES, VOCDataset

XML = """<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = """<object><name>{name}</name><difficult>{difficult}</difficult>
<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"""


def _devkit(root, year, image_set, items, w=40, h=30):
    """Writes a tiny VOC<year> tree; ``items`` maps image name -> list of object dicts or raw XML."""
    base = os.path.join(root, f"VOC{year}")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    for name, objects in items.items():
        cv2.imwrite(os.path.join(base, "JPEGImages", name + ".jpg"), np.zeros((h, w, 3), np.uint8))
        xml = objects if isinstance(objects, str) else XML.format(
            w=w, h=h, objects="".join(OBJ.format(**o) for o in objects))
        with open(os.path.join(base, "Annotations", name + ".xml"), "w") as f:
            f.write(xml)
    with open(os.path.join(base, "ImageSets", "Main", image_set + ".txt"), "w") as f:
        f.write("\n".join(items) + "\n")


def _obj(name="dog", difficult=0, x1=1, y1=1, x2=10, y2=20):
    return dict(name=name, difficult=difficult, x1=x1, y1=y1, x2=x2, y2=y2)


def test_round_trip_matches_in_memory_dataset(tmp_path):
    train = SyntheticDataset(5, seed=2, image_size=(80, 112), num_classes=3)
    val = SyntheticDataset(3, seed=2, image_size=(80, 112), num_classes=3, split="val")
    write_voc(train, str(tmp_path))
    write_voc(val, str(tmp_path))
    ds = VOCDataset(str(tmp_path), ["2007/train"])
    assert ds.class_names == train.class_names and len(ds) == 5
    for i in range(5):
        (a, ta), (b, tb) = ds[i], train[i]
        assert torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
        assert a.shape == b.shape and (a.float() - b.float()).abs().mean() < 15  # JPEG of pixel noise
    assert len(VOCDataset(str(tmp_path), ["2007/val"])) == 3


def test_default_classes_box_convention_and_concatenation(tmp_path):
    _devkit(tmp_path, "2007", "trainval", {"000001": [_obj("dog", 0, 1, 1, 40, 30), _obj("cat", 1)]})
    _devkit(tmp_path, "2012", "trainval", {"2008_000002": [_obj("tvmonitor", 0, 5, 6, 7, 8)],
                                           "2008_000003": [_obj("cat", 1)]})
    ds = VOCDataset(str(tmp_path), ["2007/trainval", "2012/trainval"], keep_difficult=True)
    assert ds.class_names == list(VOC_CLASSES) and len(ds) == 3
    _, t = ds[0]
    # 1-based inclusive -> continuous: a full-image box is [0, 0, W, H].
    assert t["boxes"].tolist() == [[0, 0, 40, 30], [0, 0, 10, 20]]
    assert t["labels"].tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("cat")]
    assert t["difficult"].tolist() == [False, True]
    assert ds[1][1]["boxes"].tolist() == [[4, 5, 7, 8]] and ds[1][1]["image_id"] == 1
    assert ds.image_hw(2) == (30, 40) and ds.get_annotations(1)["file_name"] == "2008_000002"


def test_difficult_left_out_of_training_but_kept_for_evaluation(tmp_path):
    _devkit(tmp_path, "2007", "train", {"a": [_obj("dog"), _obj("cat", 1)], "b": [_obj("cat", 1)]})
    train = VOCDataset(str(tmp_path), ["2007/train"], filter_empty=True)
    assert len(train) == 1  # "b" has only a difficult object
    _, t = train[0]
    assert t["labels"].tolist() == [VOC_CLASSES.index("dog")] and not t["difficult"].any()
    ann = train.get_annotations(0)
    assert ann["difficult"].tolist() == [False, True]
    evaluation = VOCDataset(str(tmp_path), ["2007/train"], keep_difficult=True)
    assert len(evaluation) == 2 and evaluation[1][1]["difficult"].tolist() == [True]


def test_malformed_xml_names_the_file(tmp_path):
    _devkit(tmp_path, "2007", "train", {"bad": "<annotation><size>"})
    with pytest.raises(ValueError, match=r"bad\.xml.*not valid"):
        VOCDataset(str(tmp_path), ["2007/train"])


def test_unknown_class_names_the_file(tmp_path):
    _devkit(tmp_path, "2007", "train", {"u": [_obj("unicorn")]})
    with pytest.raises(ValueError, match=r"u\.xml.*unknown class name 'unicorn'"):
        VOCDataset(str(tmp_path), ["2007/train"])


def test_missing_fields(tmp_path):
    _devkit(tmp_path, "2007", "train", {"m": "<annotation><object><name>dog</name></object></annotation>"})
    with pytest.raises(ValueError, match=r"m\.xml.*missing <size>"):
        VOCDataset(str(tmp_path), ["2007/train"])


@pytest.mark.parametrize("remove", ["Annotations/x.xml", "JPEGImages/x.jpg", "ImageSets/Main/train.txt"])
def test_missing_files_are_named(tmp_path, remove):
    _devkit(tmp_path, "2007", "train", {"x": [_obj()]})
    os.remove(os.path.join(tmp_path, "VOC2007", remove))
    with pytest.raises(FileNotFoundError, match=os.path.basename(remove).replace(".", r"\.")):
        VOCDataset(str(tmp_path), ["2007/train"])


@pytest.mark.parametrize("splits", ["2007/train", [], ["2007"], ["2007/train/x"]])
def test_bad_splits(tmp_path, splits):
    _devkit(tmp_path, "2007", "train", {"x": [_obj()]})
    with pytest.raises(ValueError, match="split"):
        VOCDataset(str(tmp_path), splits)


def test_corrupt_image_names_the_file(tmp_path):
    _devkit(tmp_path, "2007", "train", {"x": [_obj()]})
    with open(os.path.join(tmp_path, "VOC2007", "JPEGImages", "x.jpg"), "wb") as f:
        f.write(b"\xff\xd8garbage")
    ds = VOCDataset(str(tmp_path), ["2007/train"])
    with pytest.raises(RuntimeError, match=r"x\.jpg"):
        ds[0]
