"""COCODataset: round trip with the synthetic writer, label mapping, crowd, filtering, bad files."""
import json
import os
import warnings

import cv2
import numpy as np
import pytest
import torch

from dcn_det.data.coco import COCODataset
from dcn_det.data.synthetic import SyntheticDataset, write_coco


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("coco"))
    ds = SyntheticDataset(6, seed=4, image_size=(80, 112), num_classes=4)
    ann_file = write_coco(ds, root)
    return ds, ann_file, os.path.join(root, "train")


def test_round_trip_matches_in_memory_dataset(written):
    ds, ann_file, image_root = written
    assert ann_file.endswith(os.path.join("annotations", "instances_train.json"))
    coco_ds = COCODataset(ann_file, image_root)
    assert len(coco_ds) == len(ds) and coco_ds.class_names == ds.class_names
    assert coco_ds.contiguous_to_cat_id == [1, 2, 3, 4]
    for i in range(len(ds)):
        (a, ta), (b, tb) = coco_ds[i], ds[i]
        assert torch.equal(a, b)  # PNG is lossless
        assert torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
        assert ta["image_id"] == tb["image_id"] and ta["orig_size"] == tb["orig_size"]
        assert coco_ds.image_hw(i) == tuple(b.shape[1:])
    # pycocotools sees the same annotations.
    n_boxes = sum(len(ds.get_annotations(i)["boxes"]) for i in range(len(ds)))
    assert len(coco_ds.coco.getAnnIds()) == n_boxes
    ann = coco_ds.coco.loadAnns(coco_ds.coco.getAnnIds(imgIds=[1]))[0]
    x, y, w, h = ann["bbox"]
    assert [x, y, x + w, y + h] in ds.get_annotations(0)["boxes"].tolist()


def _write(tmp_path, data, name="ann.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def _image(tmp_path, name, h=20, w=30):
    cv2.imwrite(str(tmp_path / name), np.full((h, w, 3), 100, np.uint8))


def _basic(**over):
    data = {
        "images": [{"id": 10, "file_name": "a.png", "height": 20, "width": 30},
                   {"id": 11, "file_name": "b.png", "height": 20, "width": 30},
                   {"id": 12, "file_name": "c.png", "height": 20, "width": 30}],
        "categories": [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [1, 2, 10, 5], "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 4, 4], "iscrowd": 0},
            {"id": 3, "image_id": 10, "category_id": 3, "bbox": [5, 5, 9, 9], "iscrowd": 1},
            {"id": 4, "image_id": 11, "category_id": 7, "bbox": [5, 5, 9, 9], "iscrowd": 1},
        ],
    }
    data.update(over)
    return data


def test_contiguous_labels_crowd_and_filtering(tmp_path):
    for n in "abc":
        _image(tmp_path, f"{n}.png")
    ann_file = _write(tmp_path, _basic())
    ds = COCODataset(ann_file, str(tmp_path))
    assert ds.contiguous_to_cat_id == [3, 7] and ds.class_names == ["three", "seven"]
    assert ds.cat_id_to_contiguous == {3: 0, 7: 1}
    assert len(ds) == 3  # eval keeps images without usable boxes
    _, t = ds[0]
    assert t["image_id"] == 10
    assert t["boxes"].tolist() == [[1, 2, 11, 7], [0, 0, 4, 4]]  # the crowd box is left out
    assert t["labels"].tolist() == [1, 0] and not t["difficult"].any()
    ann = ds.get_annotations(0)  # evaluators see the crowd box, flagged as ignored
    assert ann["difficult"].tolist() == [False, False, True] and ann["file_name"] == "a.png"
    train = COCODataset(ann_file, str(tmp_path), filter_empty=True)
    assert train.image_ids == [10]  # 11 has only a crowd box, 12 none


def test_bad_boxes_are_dropped_with_one_warning(tmp_path):
    _image(tmp_path, "a.png")
    data = _basic(images=_basic()["images"][:1], annotations=[
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [1, 2, 10, 5]},
        {"id": 2, "image_id": 10, "category_id": 7, "bbox": [1, 2, -3, 5]},
        {"id": 3, "image_id": 10, "category_id": 7, "bbox": [1, 2, 4, 0]},
        {"id": 4, "image_id": 10, "category_id": 7, "bbox": [float("nan"), 2, 4, 4]},
    ])
    ann_file = str(tmp_path / "ann.json")
    with open(ann_file, "w") as f:
        json.dump(data, f)  # writes NaN, which Python's json reads back
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = COCODataset(ann_file, str(tmp_path))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "3 annotation" in messages[0] and "ann.json" in messages[0]
    assert ds[0][1]["boxes"].tolist() == [[1, 2, 11, 7]]
    assert len(ds.coco.getAnnIds()) == 1


@pytest.mark.parametrize("data, match", [
    (_basic(images=[]), "no images"),
    (_basic(categories=[]), "no categories"),
    ([1, 2], "JSON object"),
    (_basic(annotations=[{"id": 5, "image_id": 10, "category_id": 99, "bbox": [0, 0, 1, 1]}]),
     "annotation id 5 has category_id 99"),
    (_basic(annotations=[{"id": 6, "image_id": 404, "category_id": 7, "bbox": [0, 0, 1, 1]}]),
     "annotation id 6 refers to image_id 404"),
    (_basic(annotations=[{"id": 8, "image_id": 10, "category_id": 7, "bbox": [0, 0, 1]}]),
     "annotation id 8 needs 'bbox'"),
    (_basic(images=[{"id": 1, "file_name": "../secret.png", "height": 2, "width": 2}],
            annotations=[]), "image id 1 has file_name '../secret.png'"),
    (_basic(images=[{"id": 2, "file_name": "x/../../s.png", "height": 2, "width": 2}],
            annotations=[]), "image id 2 has file_name"),
    (_basic(images=[{"id": 3, "file_name": "/etc/passwd", "height": 2, "width": 2}],
            annotations=[]), "image id 3 has file_name '/etc/passwd'"),
    (_basic(images=[{"id": 4, "height": 2, "width": 2}], annotations=[]), "no 'file_name'"),
    (_basic(images=[{"id": 4, "file_name": "a.png", "height": 2, "width": 2}] * 2,
            annotations=[]), "image id 4 appears twice"),
])
def test_invalid_annotation_files(tmp_path, data, match):
    ann_file = _write(tmp_path, data)
    with pytest.raises(ValueError, match=match) as info:
        COCODataset(ann_file, str(tmp_path))
    assert "ann.json" in str(info.value)


@pytest.mark.parametrize("content", ['{"images": [', ""])
def test_malformed_json_names_the_file(tmp_path, content):
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        COCODataset(str(path), str(tmp_path))


def test_missing_annotation_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        COCODataset(str(tmp_path / "missing.json"), str(tmp_path))


def test_unreadable_image_names_the_file(tmp_path):
    ann_file = _write(tmp_path, _basic())  # no image files were written
    ds = COCODataset(ann_file, str(tmp_path))
    with pytest.raises(RuntimeError, match=r"a\.png"):
        ds[0]
