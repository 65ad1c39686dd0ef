"""The engine tests' tiny R-FCN-DCN config (tiny.yaml, trains in seconds on the CPU) and a
subprocess runner."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny.yaml")


@pytest.fixture
def tiny_config():
    """Path of tests/engine/tiny.yaml (8 synthetic images, ResNet-18 x0.125, 20 iterations);
    self-contained, so it does not change when the demo config is tuned."""
    return TINY_CONFIG


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
