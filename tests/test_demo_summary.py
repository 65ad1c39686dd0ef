"""Tests for ``tools/demo_summary.py``: the last step of `make demo` (paths, AP50 check)."""
import importlib.util
import json
import os
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("demo_summary",
                                               os.path.join(ROOT, "tools", "demo_summary.py"))
demo_summary = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo_summary)


def _demo_dir(tmp_path, ap50=72.5, pngs=("000001.png", "000002.png")):
    """A folder laid out as `make demo` leaves it, with a given AP50."""
    for sub in ("data/train", "train/checkpoints", "test", "vis", "offsets"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "offsets" / "000001_points.png").write_bytes(b"x")
    (tmp_path / "offsets" / "effective_dilation.json").write_text("{}")
    (tmp_path / "train" / "checkpoints" / "model_final.pth").write_bytes(b"x")
    (tmp_path / "model.pth").write_bytes(b"x")
    bbox = {"AP": 41.0, "AP50": ap50, "AP75": 40.0, "APs": 10.0, "APm": 30.0, "APl": 50.0}
    # what tools/test.py writes: one line per evaluation, the last one counts
    older = {"iteration": None, "checkpoint": "old.pth", "bbox/AP50": 1.0}
    last = {"iteration": None, "checkpoint": "model.pth",
            **{f"bbox/{k}": v for k, v in bbox.items()}}
    (tmp_path / "test" / "metrics.json").write_text(json.dumps(older) + "\n"
                                                    + json.dumps(last) + "\n")
    for name in pngs:
        (tmp_path / "vis" / name).write_bytes(b"x")
    return tmp_path


def test_summary_lists_every_output_and_the_ap(tmp_path, capsys):
    d = _demo_dir(tmp_path)
    assert demo_summary.main(["--demo-dir", str(d), "--min-ap50", "60",
                              "--started-at", str(time.time() - 90)]) == 0
    out = capsys.readouterr().out
    for rel in ("data", "train/checkpoints/model_final.pth", "model.pth", "test/metrics.json",
                "vis/000001.png", "vis/000002.png", "offsets/000001_points.png",
                "offsets/effective_dilation.json"):
        assert os.path.join(str(d), rel) in out
    assert "AP50 72.5" in out and "AP 41.0" in out and ">= 60: OK" in out
    assert "MISSING" not in out
    assert "demo wall time: 1.5 min" in out


def test_low_ap50_fails_the_demo(tmp_path, capsys):
    d = _demo_dir(tmp_path, ap50=59.9)
    assert demo_summary.main(["--demo-dir", str(d), "--min-ap50", "60"]) == 1
    assert "AP50 59.9 is below the demo's target of 60" in capsys.readouterr().out
    # Without a target the same run passes.
    assert demo_summary.main(["--demo-dir", str(d)]) == 0


@pytest.mark.parametrize("missing",
                         ["model.pth", "train/checkpoints/model_final.pth", "vis/000001.png",
                          "offsets/000001_points.png", "offsets/effective_dilation.json"])
def test_missing_outputs_fail_the_demo_and_are_named(tmp_path, capsys, missing):
    d = _demo_dir(tmp_path, pngs=("000001.png",))
    os.remove(d / missing)
    assert demo_summary.main(["--demo-dir", str(d)]) == 1
    out = capsys.readouterr().out
    if missing.endswith(".png"):
        folder = os.path.dirname(missing)
        assert f"no PNG files in {d / folder}" in out
    else:
        assert f"MISSING: {d / missing}" in out


def test_bad_demo_dir_and_non_coco_metrics_are_reported(tmp_path, capsys):
    assert demo_summary.main(["--demo-dir", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    d = _demo_dir(tmp_path)
    (d / "test" / "metrics.json").write_text(json.dumps({"iteration": 1, "voc/mAP": 50.0}))
    with pytest.raises(ValueError, match=r"metrics.json has no COCO 'bbox' metrics.*\['voc'\]"):
        demo_summary.main(["--demo-dir", str(d)])
    # a metrics.json of an older dcn_det (one document) still reads
    (d / "test" / "metrics.json").write_text(json.dumps({"bbox": {"AP": 1.0, "AP50": 61.0}},
                                                        indent=2))
    assert demo_summary.read_metrics(str(d / "test" / "metrics.json"))["AP50"] == 61.0
