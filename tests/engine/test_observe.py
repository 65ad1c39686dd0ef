"""What a training run lets its user see: TensorBoard evaluation tags and images, one
metrics.json line per evaluation (also across a resume), and crash tracebacks in log.txt."""
import glob
import json
import logging
import os

import cv2
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dcn_det.config import load_config
from dcn_det.data.build import build_dataset
from dcn_det.engine.eval_logging import EvalImages
from dcn_det.engine.trainer import train
from dcn_det.evaluation.metrics_file import read_lines
from dcn_det.io.checkpoint import load_file
from dcn_det.modeling import build_model

CLASSES = ["disc", "square"]  # the tiny config's 2 synthetic classes


def _events(out):
    files = glob.glob(os.path.join(out, "tensorboard", "events.out.tfevents.*"))
    assert files, f"no event file under {out}/tensorboard"
    acc = EventAccumulator(os.path.join(out, "tensorboard"),
                           size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-iteration tiny run evaluated at iterations 2 and 4, two images drawn at each."""
    out = str(tmp_path_factory.mktemp("observe") / "run")
    cfg = load_config(os.path.join(os.path.dirname(__file__), "tiny.yaml"), [
        f"runtime.output_dir={out}", "solver.max_iter=4", "solver.warmup_iters=2",
        "solver.steps=[3]", "solver.checkpoint_period=2", "test.eval_period=2",
        "test.vis_images=2", "test.vis_score_thresh=0.0", "runtime.log_period=2"])
    # Module-scoped: set up before the autouse logger-restoring fixture of tests/conftest.py,
    # so the logger state that train() changes is put back here.
    log = logging.getLogger("dcn_det")
    state = (list(log.handlers), log.level, log.propagate)
    try:
        metrics = train(cfg, resume="none")
    finally:
        for h in log.handlers:
            if h not in state[0]:
                h.close()
        log.handlers[:], log.level, log.propagate = state[0], state[1], state[2]
    return cfg, out, metrics


def test_tensorboard_has_every_evaluation_at_its_iteration(run):
    cfg, out, metrics = run
    acc = _events(out)
    tags = set(acc.Tags()["scalars"])
    lines = read_lines(os.path.join(out, "metrics.json"))
    assert [line["iteration"] for line in lines] == [2, 4]
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        events = acc.Scalars(f"eval/{key}") if f"eval/{key}" in tags else []
        # NaN metrics (no objects of that size) are left out of TensorBoard, never written 0
        want = [(line["iteration"], line[f"bbox/{key}"]) for line in lines
                if not np.isnan(line[f"bbox/{key}"])]
        assert [(e.step, pytest.approx(e.value, abs=1e-4)) for e in events] == want, key
    assert {"eval/AP", "eval/AP50", "eval/AP75"} <= tags
    for name in CLASSES:
        events = acc.Scalars(f"eval_per_class/{name}")
        assert [e.step for e in events] == [2, 4]
        assert events[-1].value == pytest.approx(metrics["bbox_per_class"][name], abs=1e-4)
    # the final evaluation is the returned one
    assert lines[-1]["bbox/AP50"] == pytest.approx(metrics["bbox"]["AP50"])
    assert {"train/total_loss", "train/lr"} <= tags


def test_tensorboard_images_are_the_drawn_detections_and_ground_truth(run):
    cfg, out, _ = run
    acc = _events(out)
    dataset = build_dataset(cfg.data.test, cfg.data, is_train=False)
    ids = [dataset[i][1]["image_id"] for i in range(2)]
    assert sorted(acc.Tags()["images"]) == sorted(f"eval_images/{i}" for i in ids)
    # The step-4 images are exactly what the final weights draw (PNG is lossless).
    model = build_model(cfg.model)
    model.load_state_dict(load_file(os.path.join(out, "checkpoints", "model_final.pth"))["model"])
    drawn = dict(EvalImages(dataset, 2, CLASSES, 0.0).draw(model, torch.device("cpu")))
    for image_id in ids:
        events = acc.Images(f"eval_images/{image_id}")
        assert [e.step for e in events] == [2, 4]
        decoded = [cv2.cvtColor(cv2.imdecode(np.frombuffer(e.encoded_image_string, np.uint8),
                                             cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                   for e in events]
        assert decoded[-1].shape == (96, 128, 3)  # the resized test image
        assert np.array_equal(decoded[-1], drawn[f"eval_images/{image_id}"])
        # white ground-truth boxes are in it
        assert (decoded[-1] == 255).all(axis=2).sum() > 20


def test_metrics_lines_survive_a_resume_without_duplicates(run, tmp_path):
    cfg, out, metrics = run
    before = read_lines(os.path.join(out, "metrics.json"))
    # Finished: a rerun only returns the final line and writes nothing.
    again = train(cfg, resume="auto")
    assert json.dumps(again, sort_keys=True) == json.dumps(metrics, sort_keys=True)  # NaN too
    assert read_lines(os.path.join(out, "metrics.json")) == before
    # Resuming from iteration 2 drops the line of iteration 4 and writes it again, once.
    ckpt = os.path.join(out, "checkpoints", "model_0000001.pth")
    assert load_file(ckpt)["iteration"] == 2
    train(cfg, resume=ckpt)
    after = read_lines(os.path.join(out, "metrics.json"))
    assert [line["iteration"] for line in after] == [2, 4]
    # The evaluation at 2 ran after the checkpoint of 2 but does not disturb the random
    # stream (trainer: fork_rng), so the resumed run recomputes the same final line.
    assert json.dumps(after) == json.dumps(before)


def test_vis_images_zero_writes_no_images(tiny_config, tmp_path):
    out = str(tmp_path / "run")
    cfg = load_config(tiny_config, [f"runtime.output_dir={out}", "solver.max_iter=1",
                                    "solver.warmup_iters=1", "solver.steps=[1]",
                                    "solver.checkpoint_period=0", "test.vis_images=0"])
    train(cfg, resume="none")
    acc = _events(out)
    assert acc.Tags()["images"] == [] and "eval/AP" in acc.Tags()["scalars"]
    assert [line["iteration"] for line in read_lines(os.path.join(out, "metrics.json"))] == [1]


def test_a_crash_leaves_its_traceback_in_log_txt(tiny_config, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "run")
    cfg = load_config(tiny_config, [f"runtime.output_dir={out}", "solver.max_iter=3",
                                    "solver.warmup_iters=1", "solver.steps=[2]",
                                    "solver.checkpoint_period=0"])
    from dcn_det.modeling.heads.roi_heads import RoIHeads

    def broken_losses(self, *args, **kwargs):
        raise ZeroDivisionError("planted failure in the head losses")

    monkeypatch.setattr(RoIHeads, "losses", broken_losses)
    with pytest.raises(ZeroDivisionError, match="planted failure"):
        train(cfg, resume="none")
    log = open(os.path.join(out, "log.txt"), encoding="utf-8").read()
    assert "training stopped by ZeroDivisionError: planted failure in the head losses" in log
    assert "Traceback (most recent call last)" in log and "in broken_losses" in log
    # The traceback went to the file only, not to the console.
    assert "Traceback" not in capsys.readouterr().out


@pytest.mark.slow  # the train and test commands
def test_user_errors_stay_one_line_but_the_log_files_get_the_traceback(tiny_config, tmp_path):
    from .conftest import run_tool
    out = str(tmp_path / "run")
    proc = run_tool("train", "--config", tiny_config, "--output-dir", out, "--resume",
                    str(tmp_path / "no_such.pth"), check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error:") and "no_such.pth" in errors[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    log = open(os.path.join(out, "log.txt"), encoding="utf-8").read()
    assert "training stopped by" in log and "no_such.pth" in log
    assert "Traceback (most recent call last)" in log
    test_out = str(tmp_path / "test")
    proc = run_tool("test", "--config", tiny_config, "--checkpoint", str(tmp_path / "none.pth"),
                    "--output-dir", test_out, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    log = open(os.path.join(test_out, "test_log.txt"), encoding="utf-8").read()
    assert "none.pth" in log and "Traceback (most recent call last)" in log


def test_eval_scalars_of_coco_and_voc_results():
    from dcn_det.engine.eval_logging import eval_scalars
    nan = float("nan")
    coco = {"bbox": {"AP": 30.0, "AP50": 50.0, "APl": nan},
            "bbox_per_class": {"disc": 20.0, "ring": nan}}
    assert eval_scalars(coco) == {"eval/AP": 30.0, "eval/AP50": 50.0,
                                  "eval_per_class/disc": 20.0}
    voc = {"voc": {"mAP": 60.0, "mAP_07": 58.0, "classes_without_gt": ["cat"],
                   "per_class": {"dog": {"AP": 60.0, "AP_07": 58.0},
                                 "cat": {"AP": nan, "AP_07": nan}}}}
    assert eval_scalars(voc) == {"eval/mAP": 60.0, "eval/mAP_07": 58.0,
                                 "eval_per_class/dog": 60.0, "eval_per_class_07/dog": 58.0}
    assert eval_scalars({}) == {}  # ranks other than 0


def test_draw_ground_truth_uses_one_colour_and_names():
    from dcn_det.visualization import GT_COLOR, class_color, draw_ground_truth
    image = np.full((60, 80, 3), 100, np.uint8)
    drawn = draw_ground_truth(image, torch.tensor([[10.0, 20.0, 50.0, 55.0]]),
                              torch.tensor([1]), CLASSES)
    assert tuple(drawn[40, 10]) == GT_COLOR and tuple(drawn[40, 50]) == GT_COLOR
    assert (drawn[35:45, 20:40] == 100).all() and (image == 100).all()
    assert GT_COLOR not in {class_color(k) for k in range(50)}
    with pytest.raises(ValueError, match=r"labels must be in 0..1"):
        draw_ground_truth(image, torch.tensor([[1.0, 1.0, 5.0, 5.0]]), torch.tensor([2]),
                          CLASSES)
    with pytest.raises(ValueError, match="same length"):
        draw_ground_truth(image, torch.zeros(2, 4), torch.tensor([0]), CLASSES)


def test_logs_traceback_logs_errors_file_only_and_lets_stops_pass():
    from dcn_det.engine.train_loop import StopRequested
    from dcn_det.log import logs_traceback

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("dcn_det")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        @logs_traceback("work")
        def fails(exc):
            raise exc

        with pytest.raises(KeyError):
            fails(KeyError("k"))
        with pytest.raises(StopRequested):
            fails(StopRequested(143))  # a requested stop is not a crash
    finally:
        log.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["work stopped by KeyError: 'k'"]
    assert records[0].exc_info is not None and records[0].file_only
    assert fails.__name__ == "fails"
