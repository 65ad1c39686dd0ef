"""The engine tests' tiny R-FCN-DCN config (tiny.yaml, trains in seconds on the CPU) and a
runner of the command-line tools in this process."""
import contextlib
import importlib
import io
import os
import subprocess

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny.yaml")


@pytest.fixture
def tiny_config():
    """Path of tests/engine/tiny.yaml (8 synthetic images, ResNet-18 x0.125, 20 iterations);
    self-contained, so it does not change when the demo config is tuned."""
    return TINY_CONFIG


def run_tool(name, *args, check=True) -> subprocess.CompletedProcess:
    """Runs the console command ``dcn_det.tools.<name>.run`` in this process with one intra-op
    thread, as ``tools/<name>.py`` would run (same exit code and output), and returns what it
    printed as a CompletedProcess. For tests where the process itself (signals, a crash) is
    not what is tested: starting an interpreter costs seconds here. The scripts themselves are
    run by ``tests/test_commands.py``."""
    module = importlib.import_module(f"dcn_det.tools.{name}")
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = module.run(list(args))
    finally:
        torch.set_num_threads(threads)
    proc = subprocess.CompletedProcess([name, *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"dcn_det.tools.{name} failed ({code}):\n{proc.stdout[-3000:]}"
                             f"\n{proc.stderr[-3000:]}")
    return proc
