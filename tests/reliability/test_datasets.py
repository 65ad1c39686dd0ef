"""Datasets that are malformed, hostile or disagree with the model: each is a named error or a
counted, reported skip, never silence."""
import contextlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from dcn_det.config import config_from_dict
from dcn_det.data.base import DatasetError
from dcn_det.data.build import build_test_loader, build_train_loader
from dcn_det.data.check import check_dataset
from dcn_det.data.coco import COCODataset
from dcn_det.data.voc import VOCDataset
from dcn_det.evaluation.class_map import model_to_dataset_labels
from dcn_det.evaluation.evaluate import evaluate, evaluate_checkpoint
from tests.data.conftest import data_cfg, dataset_cfg

from .datasets_on_disk import (NAMES, OBJECTS, SIZES, basic_coco, coco_dict, jpeg_with_exif_orientation,
                               write_coco, write_image, write_voc)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PERMUTED = {"triangle": 1, "disc": 2, "square": 3}  # the same classes under other ids


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _log_records(name):
    """The records of logger ``name`` (the ``dcn_det`` logger may not propagate to pytest)."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def _one_warning(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    return result, messages[0]


# --- the model's classes vs the dataset's ----------------------------------------------------

class FixedDetections(nn.Module):
    """Stand-in detector: for each image (told apart by its size) the ground-truth boxes with
    the model's label of their class, and a false positive, as an eval-mode detector returns."""

    def __init__(self):
        super().__init__()
        self.dets = {}
        for image_id, objs in OBJECTS.items():
            boxes = [[x, y, x + w, y + h] for _, (x, y, w, h) in objs] + [[0, 0, 8, 8]]
            labels = [NAMES.index(name) for name, _ in objs] + [0]
            scores = [0.9 - 0.1 * j for j in range(len(objs))] + [0.95]
            self.dets[SIZES[image_id]] = {"boxes": torch.tensor(boxes, dtype=torch.float32),
                                          "scores": torch.tensor(scores),
                                          "labels": torch.tensor(labels)}

    def forward(self, images, orig_sizes=None):
        return [dict(self.dets[tuple(hw)]) for hw in orig_sizes]


def _coco_cfg(ann_file, folder, num_classes=3):
    return config_from_dict({
        "model": {"num_classes": num_classes},
        "data": {"test": {"type": "coco", "root": folder, "ann_file": ann_file},
                 "min_size_test": 40, "max_size_test": 100, "test_images_per_batch": 2,
                 "num_workers": 0},
        "test": {"evaluator": "coco"}})


def _renamed(old, new):
    data = basic_coco()
    next(c for c in data["categories"] if c["name"] == old)["name"] = new
    return data


def test_permuted_category_ids_are_mapped_by_name(tmp_path):
    folder = str(tmp_path)
    original = write_coco(folder, basic_coco(), "original.json")
    permuted = write_coco(folder, coco_dict(PERMUTED), "permuted.json")
    assert COCODataset(permuted, folder).class_names == ["triangle", "disc", "square"]
    model, cpu = FixedDetections(), torch.device("cpu")
    want = evaluate(_coco_cfg(original, folder), model, cpu, None, class_names=NAMES)
    got = evaluate(_coco_cfg(permuted, folder), model, cpu, str(tmp_path / "out"),
                   class_names=NAMES)
    assert want["bbox"]["AP"] > 50
    assert got["bbox"] == want["bbox"] and got["bbox_per_class"] == want["bbox_per_class"]
    # detections.json carries the permuted file's own category ids
    dets = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert {d["category_id"] for d in dets if d["bbox"] == [4, 4, 20, 20]} == {PERMUTED["disc"]}
    # in label order (only the count checked) the same detections score far lower
    unmapped = evaluate(_coco_cfg(permuted, folder), model, cpu, None)
    assert unmapped["bbox"]["AP"] < want["bbox"]["AP"] - 30


def test_class_names_that_do_not_match_fail_listing_both(tmp_path):
    folder = str(tmp_path)
    other = write_coco(folder, _renamed("triangle", "star"), "other.json")
    model = FixedDetections()
    with pytest.raises(DatasetError, match=r"(?s)the model.*other\.json.*only in the model: "
                                           r"\['triangle'\].*only in the dataset: \['star'\]"
                                           r".*\['disc', 'square', 'triangle'\]"
                                           r".*\['disc', 'square', 'star'\]"):
        evaluate(_coco_cfg(other, folder), model, torch.device("cpu"), None, class_names=NAMES)
    with pytest.raises(DatasetError, match=r"2 classes vs 3"):
        model_to_dataset_labels(NAMES[:2], NAMES, "m.pth", "ann.json")
    with pytest.raises(DatasetError, match=r"other\.json has 3 classes .* model\.num_classes=2"):
        evaluate(_coco_cfg(other, folder, num_classes=2), model, torch.device("cpu"), None)


def test_label_map_and_default_names():
    assert model_to_dataset_labels(NAMES, NAMES, "m", "d") is None
    assert model_to_dataset_labels(NAMES, ["triangle", "disc", "square"], "m", "d") == [1, 2, 0]
    with _log_records("dcn_det.evaluation.class_map") as records:
        assert model_to_dataset_labels(["class_0", "class_1", "class_2"], NAMES, "m.pth",
                                       "ann.json") is None
    assert any("m.pth stores no class names" in r.getMessage() and "cannot be checked"
               in r.getMessage() for r in records)
    with pytest.raises(DatasetError, match="repeats a class name"):
        model_to_dataset_labels(["a", "a", "b"], ["a", "b", "a"], "m", "d")


def test_test_py_path_refuses_a_checkpoint_of_other_classes(tmp_path):
    from tests.test_export import real_tiny_model
    folder = str(tmp_path)
    other = write_coco(folder, _renamed("triangle", "star"), "other.json")
    model, cfg = real_tiny_model("rfcn")
    ckpt = str(tmp_path / "model.pth")
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "class_names": NAMES}, ckpt)
    test_cfg = config_from_dict({**_coco_cfg(other, folder).to_dict(),
                                 "runtime": {"output_dir": str(tmp_path / "out"),
                                             "device": "cpu"}})
    with pytest.raises(DatasetError, match=r"(?s)model\.pth.*other\.json.*'star'"):
        evaluate_checkpoint(test_cfg, ckpt)


def test_training_checks_the_number_of_classes(tmp_path):
    ann = write_coco(str(tmp_path), basic_coco())
    cfg = data_cfg(train=dataset_cfg(type="coco", root=str(tmp_path), ann_file=ann))
    with pytest.raises(DatasetError, match=r"ann\.json has 3 classes .* model\.num_classes is 5"):
        build_train_loader(cfg, num_classes=5)
    loader = build_train_loader(cfg, num_classes=3)
    loader.close()


# --- malformed COCO entries ------------------------------------------------------------------

@pytest.mark.parametrize("bbox", [["10", "20", "30", "40"], [True, 0, 5, 5], [[1], 2, 3, 4],
                                  [1, 2, 3, None], [1, 2, {"w": 3}, 4]])
def test_coco_bbox_values_must_be_numbers(tmp_path, bbox):
    data = basic_coco()
    data["annotations"][1]["bbox"] = bbox  # annotation id 101
    ann = write_coco(str(tmp_path), data, images=False)
    with pytest.raises(DatasetError, match=r"ann\.json: annotation id 101 has bbox .*numbers"):
        COCODataset(ann, str(tmp_path))


@pytest.mark.parametrize("key, value", [("height", 0), ("width", -5), ("height", "40"),
                                        ("width", 60.5), ("height", True), ("width", None),
                                        ("height", [40])])
def test_coco_height_width_must_be_positive_integers(tmp_path, key, value):
    data = basic_coco()
    data["images"][1][key] = value  # image id 2
    ann = write_coco(str(tmp_path), data, images=False)
    with pytest.raises(DatasetError, match=rf"ann\.json: image id 2 has {key} .*positive integers"):
        COCODataset(ann, str(tmp_path))


def test_coco_integral_float_size_is_accepted(tmp_path):
    write_coco(str(tmp_path), basic_coco())  # the images, at their true sizes
    data = basic_coco()
    data["images"][0]["height"] = 40.0
    ds = COCODataset(write_coco(str(tmp_path), data), str(tmp_path))
    assert ds.image_hw(0) == (40, 60) and ds[0][1]["orig_size"] == (40, 60)


def _malformed(data, kind):
    if kind == "category without id":
        data["categories"][1] = {"name": "square"}
    elif kind == "category not an object":
        data["categories"][1] = "square"
    elif kind == "category id a string":
        data["categories"][1]["id"] = "2"
    elif kind == "duplicate category id":
        data["categories"][2]["id"] = 2
    elif kind == "duplicate category name":
        data["categories"][2]["name"] = "square"
    elif kind == "category without name":
        del data["categories"][1]["name"]
    elif kind == "image_id a list":
        data["annotations"][1]["image_id"] = [1]
    elif kind == "image_id a dict":
        data["annotations"][1]["image_id"] = {"id": 1}
    elif kind == "category_id a list":
        data["annotations"][1]["category_id"] = [2]
    elif kind == "category_id a bool":
        data["annotations"][1]["category_id"] = True
    elif kind == "annotation without id":
        del data["annotations"][1]["id"]
    elif kind == "duplicate annotation id":
        data["annotations"][1]["id"] = 100
    elif kind == "annotation not an object":
        data["annotations"][1] = [1, 2]
    elif kind == "image not an object":
        data["images"][1] = "2.png"
    elif kind == "image id a list":
        data["images"][1]["id"] = [2]
    elif kind == "iscrowd a string":
        data["annotations"][1]["iscrowd"] = "1"
    elif kind == "area a string":
        data["annotations"][1]["area"] = "big"
    return data


@pytest.mark.parametrize("kind, match", [
    ("category without id", r"categories\[1\] \{'name': 'square'\} has no 'id'"),
    ("category not an object", r"categories\[1\] must be an object.*'square'"),
    ("category id a string", r"categories\[1\] has id '2'"),
    ("duplicate category id", r"category id 2 appears twice.*'square'.*'triangle'"),
    ("duplicate category name", r"category name 'square' is used by ids 2 and 3"),
    ("category without name", r"category id 2 has name None"),
    ("image_id a list", r"annotation id 101 refers to image_id \[1\]"),
    ("image_id a dict", r"annotation id 101 refers to image_id \{'id': 1\}"),
    ("category_id a list", r"annotation id 101 has category_id \[2\]"),
    ("category_id a bool", r"annotation id 101 has category_id True"),
    ("annotation without id", r"annotations\[1\] \(image_id 1\) has no 'id'"),
    ("duplicate annotation id", r"annotation id 100 appears twice"),
    ("annotation not an object", r"annotations\[1\] must be an object, got \[1, 2\]"),
    ("image not an object", r"images\[1\] must be an object.*'2\.png'"),
    ("image id a list", r"images\[1\] has id \[2\]"),
    ("iscrowd a string", r"annotation id 101 has iscrowd '1'"),
    ("area a string", r"annotation id 101 has area 'big'"),
])
def test_malformed_coco_entries_are_named(tmp_path, kind, match):
    ann = write_coco(str(tmp_path), _malformed(basic_coco(), kind), images=False)
    with pytest.raises(DatasetError, match=r"ann\.json: " + match):
        COCODataset(ann, str(tmp_path))


@pytest.mark.parametrize("file_name", ["../secret.png", "a/../../secret.png", "/etc/passwd",
                                       "C:\\x.png", "\\\\server\\x.png"])
def test_coco_file_name_outside_the_root_is_refused(tmp_path, file_name):
    data = basic_coco()
    data["images"][2]["file_name"] = file_name
    ann = write_coco(str(tmp_path / "ds"), data, images=False)
    with pytest.raises(DatasetError, match=r"ann\.json: image id 3 has file_name .*inside the "
                                           r"image root"):
        COCODataset(ann, str(tmp_path / "ds"))


# --- boxes left out: counted, one warning per file -------------------------------------------

def test_coco_boxes_left_out_are_counted_in_one_warning(tmp_path):
    data = basic_coco()
    extra = [(7, [float("nan"), 2, 4, 4]), (8, [1, 2, float("inf"), 4]), (9, [1, 2, -3, 5]),
             (10, [1, 2, 4, 0]), (11, [70, 5, 10, 10]), (12, [-30, 5, 10, 10]),
             (13, [5, 45, 10, 10])]  # image 1 is 60 wide, 40 high
    data["annotations"] += [{"id": i, "image_id": 1, "category_id": 1, "bbox": b} for i, b in extra]
    ann = write_coco(str(tmp_path), data)
    ds, message = _one_warning(lambda: COCODataset(ann, str(tmp_path)))
    assert ds.dropped[0].counts() == {"non-finite": 2, "degenerate": 2, "outside": 3}
    assert message.startswith(ann) and "ignored 7 annotation(s) of 13" in message
    assert "2 with NaN/inf coordinates (ids 7, 8)" in message
    assert "2 with zero or negative width or height (ids 9, 10)" in message
    assert "3 with no area inside the image (ids 11, 12, 13)" in message
    assert len(ds[0][1]["boxes"]) == 2 and len(ds.get_annotations(0)["boxes"]) == 2


def test_voc_boxes_left_out_are_counted_in_one_warning_per_split(tmp_path):
    set_file = write_voc(str(tmp_path), {
        "a": [("disc", 1, 1, 10, 10), ("disc", 10, 5, 5, 9), ("square", "nan", 1, 5, 5)],
        "b": [("square", 50, 1, 60, 10), ("triangle", 2, 2, 8, 8)],
    })  # images 40 wide: b's first box lies right of it
    ds, message = _one_warning(lambda: VOCDataset(str(tmp_path), ["2007/train"]))
    assert ds.dropped[0].counts() == {"non-finite": 1, "degenerate": 1, "outside": 1}
    assert message.startswith(set_file) and "ignored 3 object(s) of 5" in message
    assert "ids a object 2" in message and "ids a object 1" in message
    assert "ids b object 0" in message
    assert [len(ds.get_annotations(i)["boxes"]) for i in range(2)] == [1, 1]


# --- image sizes: the decoded image must be the stated size ----------------------------------

def _exif_dataset(tmp_path, stated_hw):
    image = np.zeros((40, 60, 3), np.uint8)
    (tmp_path / "rot.jpg").write_bytes(jpeg_with_exif_orientation(image, 6))  # 90 deg clockwise
    data = {"images": [{"id": 5, "file_name": "rot.jpg", "height": stated_hw[0],
                        "width": stated_hw[1]}],
            "categories": [{"id": 1, "name": "disc"}],
            "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "bbox": [2, 2, 10, 10]}]}
    return COCODataset(write_coco(str(tmp_path), data, images=False), str(tmp_path))


def test_exif_rotated_jpeg_whose_stated_size_is_the_stored_one_is_an_error(tmp_path):
    ds = _exif_dataset(tmp_path, (40, 60))  # the stored pixels' size; decoded it is 60 x 40
    with pytest.raises(RuntimeError, match=r"(?s)ann\.json: image id 5: image file .*rot\.jpg.* "
                                           r"decodes to height x width 60x40 .* states 40x60"
                                           r".*EXIF orientation turns the stored 40x60"):
        ds[0]
    with pytest.raises(DatasetError, match="EXIF"):
        ds.load_image(0)


def test_exif_rotated_jpeg_stated_in_its_decoded_frame_is_fine(tmp_path):
    ds = _exif_dataset(tmp_path, (60, 40))
    image, target = ds[0]
    assert image.shape[1:] == (60, 40) and target["orig_size"] == (60, 40)


def test_other_size_mismatch_is_an_error_without_exif_note(tmp_path):
    write_coco(str(tmp_path), basic_coco())  # the images, at their true sizes
    data = basic_coco()
    data["images"][1]["width"] = 65  # the file is 64 wide
    ds = COCODataset(write_coco(str(tmp_path), data), str(tmp_path))
    with pytest.raises(DatasetError, match=r"image id 2: .*2\.png.* 48x64 .* states 48x65") as e:
        ds.load_image(1)
    assert "EXIF orientation turns" not in str(e.value)


# --- VOC image sets: nothing outside the dataset root ----------------------------------------

@pytest.mark.parametrize("entry", ["../../x", "/etc/passwd", "sub/a", "..\\x", "..", "C:x"])
def test_voc_set_entry_with_a_path_is_refused(tmp_path, entry):
    set_file = write_voc(str(tmp_path), {"a": [("disc", 1, 1, 10, 10)]}, entries=["a", entry])
    with pytest.raises(DatasetError) as info:
        VOCDataset(str(tmp_path), ["2007/train"])
    assert f"{set_file}, line 2: image name {entry!r}" in str(info.value)


# --- missing image files: all at once, before the first step ---------------------------------

def test_missing_training_images_are_reported_at_once(tmp_path):
    data = basic_coco()
    data["images"] += [{"id": i, "file_name": f"{i}.png", "height": 40, "width": 60}
                       for i in range(4, 9)]
    data["annotations"] += [{"id": 1000 + i, "image_id": i, "category_id": 1, "bbox": [1, 1, 9, 9]}
                            for i in range(4, 9)]
    ann = write_coco(str(tmp_path), data, images=False)
    for img in data["images"]:
        if img["id"] in (1, 3, 5):
            write_image(str(tmp_path / img["file_name"]), img["height"], img["width"])
    cfg = data_cfg(train=dataset_cfg(type="coco", root=str(tmp_path), ann_file=ann),
                   test=dataset_cfg(type="coco", root=str(tmp_path), ann_file=ann))
    with pytest.raises(FileNotFoundError, match=r"5 of 8 image files listed in .*ann\.json are "
                                                r"missing: .*2\.png.*4\.png.*6\.png.*7\.png.*8\.png"):
        build_train_loader(cfg, num_classes=3)
    with pytest.raises(FileNotFoundError, match=r"5 of 8 image files"):
        build_test_loader(cfg)


def test_missing_voc_images_are_reported_at_once(tmp_path):
    write_voc(str(tmp_path), {n: [("disc", 1, 1, 10, 10)] for n in "abcd"})
    for n in "bd":
        os.remove(tmp_path / "VOC2007" / "JPEGImages" / f"{n}.jpg")
    with pytest.raises(FileNotFoundError, match=r"2 of 4 image files listed in .*train\.txt are "
                                                r"missing: .*b\.jpg.*d\.jpg"):
        VOCDataset(str(tmp_path), ["2007/train"])


# --- tools/check_dataset.py ------------------------------------------------------------------

def test_check_dataset_on_a_good_coco_dataset(tmp_path, capsys):
    ann = write_coco(str(tmp_path), basic_coco())
    assert _tool("check_dataset").main(["--coco", ann, "--images", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for line in ("images: 3", "decodable: 3", "unreadable: 0", "size mismatches: 0",
                 "annotations: 6", "boxes left out: 0", "result: OK"):
        assert line in out, out
    assert [l.split() for l in out.splitlines() if l.strip().startswith(("disc ", "square "))] \
        == [["disc", "2"], ["square", "2"]]


def test_check_dataset_on_a_broken_coco_dataset(tmp_path, capsys):
    write_coco(str(tmp_path), basic_coco())  # the images, at their true sizes
    data = basic_coco()
    data["images"][1]["width"] = 65  # image 2: size mismatch
    data["annotations"].append({"id": 9, "image_id": 1, "category_id": 1, "bbox": [99, 1, 5, 5]})
    ann = write_coco(str(tmp_path), data)
    (tmp_path / "3.png").write_bytes(b"\x89PNG not really")  # image 3: undecodable
    with pytest.warns(UserWarning, match="ignored 1 annotation"):
        report = check_dataset(COCODataset(ann, str(tmp_path)))
    assert not report.ok and report.decodable == 2 and report.dropped["outside"] == 1
    assert len(report.unreadable) == 1 and report.unreadable[0][0].endswith("3.png")
    with pytest.warns(UserWarning, match="ignored 1 annotation"):
        code = _tool("check_dataset").main(["--coco", ann, "--images", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert "unreadable: 1" in out and "3.png" in out and "size mismatches: 1" in out
    assert "states 48x65" in out and "1 outside" in out
    assert "result: PROBLEMS: 1 unreadable image(s), 1 image size mismatch(es), 1 box(es) left out" \
        in out


def test_check_dataset_on_voc_and_from_a_config(tmp_path, capsys):
    write_voc(str(tmp_path / "voc"), {"a": [("disc", 1, 1, 10, 10)], "b": [("square", 2, 2, 9, 9)]})
    tool = _tool("check_dataset")
    assert tool.main(["--voc", str(tmp_path / "voc"), "--splits", "2007/train"]) == 0
    assert "result: OK" in capsys.readouterr().out
    os.remove(tmp_path / "voc" / "VOC2007" / "JPEGImages" / "b.jpg")
    config = os.path.join(ROOT, "configs", "demo", "rfcn_dcn_synthetic.yaml")
    code = tool.main(["--config", config, "--split", "test", "--set", "data.test.type=voc",
                      f"data.test.root={tmp_path / 'voc'}", "data.test.splits=[2007/train]"])
    out = capsys.readouterr().out
    assert code == 1 and "unreadable: 1" in out and "b.jpg" in out


def test_check_dataset_on_malformed_annotations(tmp_path, capsys):
    ann = write_coco(str(tmp_path), _malformed(basic_coco(), "image_id a list"), images=False)
    assert _tool("check_dataset").main(["--coco", ann, "--images", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "annotation id 101 refers to image_id [1]" in captured.err
    assert "result: PROBLEMS" in captured.out


# --- tools/infer.py: an unreadable image is skipped, counted, named --------------------------

@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from tests.test_export import real_checkpoint, real_tiny_model
    path = str(tmp_path_factory.mktemp("model") / "model.pth")
    torch.save(real_checkpoint(*real_tiny_model("rfcn")), path)
    return path


def _images(folder, corrupt):
    folder.mkdir()
    for name in ("a.png", "c.png"):
        write_image(str(folder / name), 50, 70)
    (folder / "b.jpg").write_bytes(b"\xff\xd8 this is no JPEG")
    if corrupt == "all":
        for name in ("a.png", "c.png"):
            (folder / name).write_bytes(b"")
    return folder


def test_infer_skips_an_unreadable_image(tmp_path, model_file, capsys):
    images = _images(tmp_path / "in", corrupt="one")
    out = tmp_path / "out"
    code = _tool("infer").main(["--model", model_file, "--input", str(images),
                                "--output-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and sorted(os.listdir(out)) == ["a.png", "c.png", "detections.json"]
    records = json.loads((out / "detections.json").read_text())
    # image ids are positions in the sorted input (a=1, b=2 skipped, c=3)
    assert {(r["image_id"], r["file_name"]) for r in records} <= {(1, "a.png"), (3, "c.png")}
    assert f"skipped {images / 'b.jpg'}" in captured.err
    assert "1 of 3 images could not be read" in captured.err


def test_infer_fails_when_no_image_can_be_read(tmp_path, model_file, capsys):
    images = _images(tmp_path / "in", corrupt="all")
    code = _tool("infer").main(["--model", model_file, "--input", str(images),
                                "--output-dir", str(tmp_path / "out")])
    assert code == 1 and "none of the 3 images" in capsys.readouterr().err


@pytest.mark.slow  # a subprocess that imports torch and builds the model
def test_infer_tool_process_skips_an_unreadable_image(tmp_path, model_file):
    images = _images(tmp_path / "in", corrupt="one")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "infer.py"), "--model",
                        model_file, "--input", str(images), "--output-dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "b.jpg" in r.stderr and "1 of 3 images could not be read" in r.stderr
    assert "Traceback" not in r.stderr
