"""metrics.json: one flat JSON line per evaluation, appended, replaced per iteration."""
import json
import math

import pytest

from dcn_det.evaluation.metrics_file import (append_metrics, drop_lines_after, flatten_metrics,
                                             read_final_training_metrics, read_lines,
                                             read_metrics, unflatten_metrics)

COCO = {"bbox": {"AP": 30.0, "AP50": 50.0, "APl": float("nan")},
        "bbox_per_class": {"disc": 20.0, "a/b": 40.0}}
VOC = {"voc": {"mAP": 60.0, "mAP_07": 58.0, "classes_without_gt": ["cat"],
               "per_class": {"dog": {"AP": 60.0, "AP_07": 58.0}}}}


def test_flatten_is_one_level_and_round_trips():
    flat = flatten_metrics(COCO)
    assert flat["bbox/AP50"] == 50.0 and flat["bbox_per_class/a/b"] == 40.0
    # json text compares NaN with NaN; "iteration" is not a metric
    assert json.dumps(unflatten_metrics({"iteration": 3, **flat})) == json.dumps(COCO)
    voc = flatten_metrics(VOC)
    assert voc["voc/per_class"] == {"dog": {"AP": 60.0, "AP_07": 58.0}}
    assert unflatten_metrics(voc) == VOC
    with pytest.raises(ValueError, match="section 'bbox' must be a mapping"):
        flatten_metrics({"bbox": 1.0})


def test_append_replace_and_read(tmp_path):
    out = str(tmp_path)
    path = tmp_path / "metrics.json"
    append_metrics(out, COCO, 100)
    append_metrics(out, {"bbox": {"AP": 31.0}}, 200)
    text = path.read_text()
    assert text.count("\n") == 2 and text.splitlines()[0].startswith('{"iteration": 100, ')
    assert math.isnan(json.loads(text.splitlines()[0])["bbox/APl"])  # NaN written as NaN
    assert read_metrics(str(path)) == {"bbox": {"AP": 31.0}}  # the last line
    assert read_metrics(str(path), iteration=100)["bbox_per_class"]["a/b"] == 40.0
    assert read_metrics(str(path), iteration=300) is None
    assert read_metrics(str(tmp_path / "missing.json")) is None
    # the same iteration again replaces its line and moves it last: no duplicates
    append_metrics(out, {"bbox": {"AP": 29.0}}, 100)
    assert [(line["iteration"], line["bbox/AP"]) for line in read_lines(str(path))] == \
        [(200, 31.0), (100, 29.0)]
    # evaluations of files (tools/test.py) are told apart by the file
    append_metrics(out, {"bbox": {"AP": 1.0}}, None, checkpoint="a.pth")
    append_metrics(out, {"bbox": {"AP": 2.0}}, None, checkpoint="b.pth")
    append_metrics(out, {"bbox": {"AP": 3.0}}, None, checkpoint="a.pth")
    assert [line.get("checkpoint") for line in read_lines(str(path))] == \
        [None, None, "b.pth", "a.pth"]
    assert read_metrics(str(path)) == {"bbox": {"AP": 3.0}}


def test_drop_lines_after_a_resume_point(tmp_path):
    out = str(tmp_path)
    for it in (100, 200, 300):
        append_metrics(out, {"bbox": {"AP": float(it)}}, it)
    append_metrics(out, {"bbox": {"AP": 0.0}}, None, checkpoint="x.pth")
    assert drop_lines_after(out, 150) == 2
    assert [line["iteration"] for line in read_lines(str(tmp_path / "metrics.json"))] == \
        [100, None]
    assert drop_lines_after(out, 150) == 0
    assert drop_lines_after(str(tmp_path / "empty"), 0) == 0  # no file: nothing to do


def test_older_single_document_and_bad_lines(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(VOC, indent=2))
    assert read_lines(str(path)) == [{"iteration": None, **flatten_metrics(VOC)}]
    assert read_metrics(str(path)) == VOC
    path.write_text(json.dumps({"bbox": {"AP": 1.0}}))  # the same on one line
    assert read_metrics(str(path), iteration=None) == {"bbox": {"AP": 1.0}}
    path.write_text('{"iteration": 1, "bbox/AP": 1.0}\nnot json\n')
    with pytest.raises(ValueError, match=r"metrics\.json: line 2 is not JSON"):
        read_lines(str(path))
    path.write_text('{"iteration": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"line 2 is not a metrics line"):
        read_lines(str(path))
    path.write_text('{"bbox": 3}')
    with pytest.raises(ValueError, match=r"neither metrics lines nor an older metrics document"):
        read_lines(str(path))


def test_final_training_metrics(tmp_path):
    out, path = str(tmp_path), str(tmp_path / "metrics.json")
    append_metrics(out, {"bbox": {"AP": 1.0}}, 50)
    append_metrics(out, {"bbox": {"AP": 9.0}}, None, checkpoint="other.pth")  # tools/test.py
    assert read_final_training_metrics(path, 100) is None  # periodic and test lines only
    append_metrics(out, {"bbox": {"AP": 2.0}}, 100)
    assert read_final_training_metrics(path, 100) == {"bbox": {"AP": 2.0}}
    (tmp_path / "metrics.json").write_text(json.dumps({"bbox": {"AP": 3.0}}, indent=2))
    assert read_final_training_metrics(path, 100) == {"bbox": {"AP": 3.0}}  # older document
    assert read_final_training_metrics(str(tmp_path / "none.json"), 100) is None
