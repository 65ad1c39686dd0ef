"""tools/train.py and tools/test.py end to end on a tiny model, and their failure modes."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from dcn_det.evaluation.metrics_file import read_lines, read_metrics
from dcn_det.io.checkpoint import Checkpointer, load_file

from .conftest import ROOT, run_tool

# Every test here trains the tiny model or runs tools/*.py in a subprocess.
pytestmark = pytest.mark.slow


def _ckpts(out):
    folder = os.path.join(out, "checkpoints")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_train_then_test_writes_metrics(tiny_config, tmp_path):
    out = str(tmp_path / "run")
    proc = run_tool("train", "--config", tiny_config, "--output-dir", out)
    assert "iter 20/20" in proc.stdout
    for name in ("config.yaml", "metrics.json", "log.txt"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert os.listdir(os.path.join(out, "tensorboard"))
    assert _ckpts(out) == ["last_checkpoint", "model_0000009.pth", "model_0000014.pth",
                           "model_final.pth"]
    lines = read_lines(os.path.join(out, "metrics.json"))
    assert [line["iteration"] for line in lines] == [20]  # eval_period 0: the final one only
    metrics = read_metrics(os.path.join(out, "metrics.json"))
    assert set(metrics["bbox"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    final = load_file(os.path.join(out, "checkpoints", "model_final.pth"))
    assert final["iteration"] == 20 and final["config"]["solver"]["max_iter"] == 20

    test_out = str(tmp_path / "test")
    proc = run_tool("test", "--config", tiny_config, "--checkpoint",
                    os.path.join(out, "checkpoints", "model_final.pth"), "--output-dir", test_out)
    tested_lines = read_lines(os.path.join(test_out, "metrics.json"))
    assert len(tested_lines) == 1 and tested_lines[0]["iteration"] is None
    assert tested_lines[0]["checkpoint"].endswith("model_final.pth")
    tested = read_metrics(os.path.join(test_out, "metrics.json"))
    assert tested["bbox"]["AP"] == metrics["bbox"]["AP"]  # same weights, same data
    dets = json.load(open(os.path.join(test_out, "detections.json")))
    assert dets and {"image_id", "category_id", "bbox", "score"} <= set(dets[0])
    assert {d["category_id"] for d in dets} <= {1, 2}  # original (1-based) category ids
    assert "AP50" in proc.stdout

    # rerunning a finished run trains nothing and changes nothing
    before = os.path.getmtime(os.path.join(out, "checkpoints", "model_final.pth"))
    proc = run_tool("train", "--config", tiny_config, "--output-dir", out)
    assert "holds a finished run" in proc.stdout and "--resume none" in proc.stdout
    assert os.path.getmtime(os.path.join(out, "checkpoints", "model_final.pth")) == before
    assert read_lines(os.path.join(out, "metrics.json")) == lines


def test_crash_and_resume_gives_the_same_weights(tiny_config, tmp_path):
    ref = str(tmp_path / "ref")
    run_tool("train", "--config", tiny_config, "--output-dir", ref, "--set", "solver.keep_last=0")
    out = str(tmp_path / "crash")
    cmd = [sys.executable, os.path.join(ROOT, "tools/train.py"), "--config", tiny_config,
           "--output-dir", out, "--set", "solver.keep_last=0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while "model_0000009.pth" not in _ckpts(out) and time.time() < deadline:
        time.sleep(0.05)
    p.kill()  # a crash: no handler runs
    p.wait()
    names = sorted(n for n in _ckpts(out) if n.startswith("model_"))
    assert "model_0000009.pth" in names and "model_final.pth" not in names
    # The checkpoint a resume tries first is truncated as if the crash hit mid-write of a
    # non-atomic save: resuming must skip it and continue from the next one, and still end
    # with the uninterrupted run's weights. Which one comes first depends on when the kill
    # landed: the newest file (model_0000009, or a later one if the kill came late), or the
    # one before it if the kill fell between writing the newest and updating last_checkpoint.
    newest, previous = [os.path.basename(c) for c in Checkpointer(out).candidates()[:2]]
    path = os.path.join(out, "checkpoints", newest)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 3])
    proc = run_tool("train", "--config", tiny_config, "--output-dir", out, "--set",
                    "solver.keep_last=0")
    skipped = [ln for ln in proc.stdout.splitlines() if "skipping unusable checkpoint" in ln]
    resumed = [ln for ln in proc.stdout.splitlines() if "resumed from" in ln]
    assert len(skipped) == 1 and newest in skipped[0], proc.stdout[-3000:]
    assert len(resumed) == 1 and previous in resumed[0], proc.stdout[-3000:]
    a = load_file(os.path.join(ref, "checkpoints", "model_final.pth"))["model"]
    b = load_file(os.path.join(out, "checkpoints", "model_final.pth"))["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_truncated_newest_checkpoint_is_skipped(tiny_config, tmp_path):
    out = str(tmp_path / "run")
    run_tool("train", "--config", tiny_config, "--output-dir", out, "--set", "solver.max_iter=10")
    path = os.path.join(out, "checkpoints", "model_final.pth")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:100])
    proc = run_tool("train", "--config", tiny_config, "--output-dir", out, "--set",
                    "solver.max_iter=10")
    assert "skipping unusable checkpoint" in proc.stdout and "model_final.pth" in proc.stdout
    # the newest complete periodic checkpoint (iteration 5; none is written at max_iter)
    assert "resumed from" in proc.stdout and "model_0000004.pth" in proc.stdout
    assert load_file(path)["iteration"] == 10  # rewritten


def test_sigterm_writes_a_checkpoint_and_exits_nonzero(tiny_config, tmp_path):
    out = str(tmp_path / "run")
    cmd = [sys.executable, os.path.join(ROOT, "tools/train.py"), "--config", tiny_config,
           "--output-dir", out, "--set", "solver.max_iter=100000", "solver.checkpoint_period=0",
           "runtime.log_period=1"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    for line in p.stdout:
        if "iter 3/" in line:
            break
    p.send_signal(signal.SIGTERM)
    rest, _ = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, rest
    names = [n for n in _ckpts(out) if n.startswith("model_")]
    assert len(names) == 1
    ckpt = load_file(os.path.join(out, "checkpoints", names[0]))
    assert ckpt["iteration"] >= 3 and names[0] == f"model_{ckpt['iteration'] - 1:07d}.pth"


def test_nan_loss_stops_and_names_iteration(tiny_config, tmp_path):
    out = str(tmp_path / "run")
    env = dict(os.environ, OMP_NUM_THREADS="1", NAN_AT_ITER="7")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "engine", "nan_train.py"),
                           "--config", tiny_config, "--output-dir", out], capture_output=True,
                          text=True, timeout=240, env=env, cwd=ROOT)
    assert proc.returncode == 3
    assert "non-finite loss at iteration 8" in proc.stderr
    for term in ("loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"):
        assert term in proc.stderr
    assert "model_0000004.pth" in _ckpts(out)  # the last good checkpoint stays
    assert load_file(os.path.join(out, "checkpoints", "model_0000004.pth"))["iteration"] == 5


def test_bad_set_key_is_named(tiny_config, tmp_path):
    proc = run_tool("train", "--config", tiny_config, "--output-dir", str(tmp_path / "r"), "--set",
                    "solver.max_itr=5", check=False)
    assert proc.returncode == 2
    assert "solver.max_itr" in proc.stderr and "max_iter" in proc.stderr
    assert not os.path.exists(tmp_path / "r" / "checkpoints")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unsafe_checkpoint_is_refused(tiny_config, tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"model": _Evil(str(marker)), "config": {}}, path)
    proc = run_tool("test", "--config", tiny_config, "--checkpoint", str(path), "--output-dir",
                    str(tmp_path / "t"), check=False)
    assert proc.returncode == 2
    assert "evil.pth" in proc.stderr and "weights_only" in proc.stderr
    assert not marker.exists()
    with open(tmp_path / "evil2.pth", "wb") as f:
        pickle.dump({"model": _Evil(str(marker))}, f)
    proc = run_tool("test", "--config", tiny_config, "--checkpoint", str(tmp_path / "evil2.pth"),
                    "--output-dir", str(tmp_path / "t"), check=False)
    assert proc.returncode == 2 and not marker.exists()
