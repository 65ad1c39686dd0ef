"""torchrun with 2 CPU processes (gloo): DDP training, rank-0 files, gathered evaluation."""
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from dcn_det.evaluation.metrics_file import read_metrics
from dcn_det.io.checkpoint import load_file

from .conftest import ROOT

# torchrun with 2 training processes.
pytestmark = pytest.mark.slow


def _torchrun(config, out, *sets, script="tools/train.py", **env_extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "0", "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0",
           os.path.join(ROOT, script), "--config", config, "--output-dir", out,
           "--set", "solver.max_iter=6", "solver.checkpoint_period=3", *sets]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **env_extra)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_two_process_training(tiny_config, tmp_path):
    out = str(tmp_path / "ddp")
    # score_thresh 0 (inference only): every test image then has detections, so the gathered
    # detections show which images were evaluated.
    proc = _torchrun(tiny_config, out, "model.head.score_thresh=0.0")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = sorted(os.listdir(os.path.join(out, "checkpoints")))
    assert names == ["last_checkpoint", "model_0000002.pth", "model_final.pth"]
    assert load_file(os.path.join(out, "checkpoints", "model_final.pth"))["iteration"] == 6
    metrics = read_metrics(os.path.join(out, "metrics.json"))
    assert "AP" in metrics["bbox"]
    # the evaluation saw every test image (4 per rank, gathered on rank 0), each once: no
    # image is missing, no detection is repeated, no image has more than
    # detections_per_image (100) of them
    dets = json.load(open(os.path.join(out, "detections.json")))
    per_image = Counter(d["image_id"] for d in dets)
    assert set(per_image) == set(range(1, 9)), sorted(per_image)
    assert max(per_image.values()) <= 100
    keys = [(d["image_id"], d["category_id"], tuple(d["bbox"]), d["score"]) for d in dets]
    assert len(set(keys)) == len(keys)
    assert proc.stdout.count("iter 6/6") == 1  # only rank 0 logs


def test_nonfinite_loss_stops_every_rank(tiny_config, tmp_path):
    out = str(tmp_path / "ddp_nan")
    proc = _torchrun(tiny_config, out, script="tests/engine/nan_train.py", NAN_AT_ITER="4")
    assert proc.returncode != 0
    assert "non-finite loss at iteration 5" in proc.stderr
    assert "model_final.pth" not in os.listdir(os.path.join(out, "checkpoints"))
