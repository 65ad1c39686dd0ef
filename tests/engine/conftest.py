"""A tiny R-FCN-DCN config that trains in seconds on the CPU, and a subprocess runner."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY = """
_base_: {demo}
model:
  num_classes: 2
  backbone: {{depth: 18, width_mult: 0.125, deform_stages: [res5], norm: bn, freeze_at: 0}}
  rpn: {{conv_channels: 32, pre_nms_topk_train: 200, post_nms_topk_train: 64,
         pre_nms_topk_test: 200, post_nms_topk_test: 50, batch_size_per_image: 64}}
  head: {{conv_channels: 64, batch_size_per_image: 32}}
data:
  train:
    type: synthetic
    synthetic: {{num_images: 8, seed: 0, image_size: [96, 128], num_classes: 2,
                 min_objects: 1, max_objects: 2, split: train}}
  test:
    type: synthetic
    synthetic: {{num_images: 8, seed: 0, image_size: [96, 128], num_classes: 2,
                 min_objects: 1, max_objects: 2, split: train}}
  min_size_train: [96]
  max_size_train: 160
  min_size_test: 96
  max_size_test: 160
  images_per_batch: 2
  test_images_per_batch: 4
  num_workers: 0
solver: {{base_lr: 0.01, max_iter: 20, steps: [15], warmup_iters: 5, checkpoint_period: 5,
          keep_last: 2}}
runtime: {{device: cpu, log_period: 5, seed: 3}}
"""


@pytest.fixture
def tiny_config(tmp_path):
    """Path of a tiny config (8 synthetic images, ResNet-18 x0.125, 20 iterations)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(demo=os.path.join(ROOT, "configs/demo/rfcn_dcn_synthetic.yaml")))
    return str(path)


def tool(name, *args, timeout=240, check=True, **popen):
    """Runs ``tools/<name>.py`` in a subprocess; returns the CompletedProcess."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", f"{name}.py"), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
                          **popen)
    if check and proc.returncode != 0:
        raise AssertionError(f"tools/{name}.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
                             f"\n{proc.stderr[-3000:]}")
    return proc
