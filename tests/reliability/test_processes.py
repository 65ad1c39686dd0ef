"""Processes: a worker dies with its killed launcher; Ctrl-C, once or twice, ends in one line
and a checkpoint, never a traceback."""
import os
import signal
import subprocess
import sys
import time

import pytest

from dcn_det.cli import run_main
from dcn_det.engine.train_loop import SignalFlag
from dcn_det.io.checkpoint import load_file
from tests.engine.conftest import ROOT, TINY_CONFIG


def _alive(pid: int) -> bool:
    """False once ``pid`` has exited (a zombie nobody reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _children(pid: int):
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid:
                kids.append(int(name))
    return kids


def _wait_gone(pids, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _read_until(stream, marker, seconds, seen):
    """Reads lines of ``stream`` into ``seen`` until one contains ``marker``."""
    deadline = time.time() + seconds
    for line in stream:
        seen.append(line)
        if marker in line:
            return line
        if time.time() > deadline:
            break
    raise AssertionError(f"{marker!r} not seen; output:\n{''.join(seen)[-3000:]}")


# ---------------------------------------------------------------------------------------
# Dying with the launcher

_WORKER = f"""
import sys, time
sys.path.insert(0, {ROOT!r})
import torch
from dcn_det import distributed as du
du.init_from_env(torch.device("cpu"))
print("ready", flush=True)
time.sleep(120)
"""

_LAUNCHER = f"""
import os, subprocess, sys
tied = dict(os.environ, LOCAL_RANK="0", WORLD_SIZE="1")
free = {{k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")}}
a = subprocess.Popen([sys.executable, "-c", {_WORKER!r}], env=tied)
b = subprocess.Popen([sys.executable, "-c", {_WORKER!r}], env=free)
print(a.pid, b.pid, flush=True)
a.wait()
"""


@pytest.mark.slow  # two Python processes import torch
def test_worker_dies_when_its_launcher_is_killed():
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "TORCHELASTIC_RUN_ID")}
    launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER], stdout=subprocess.PIPE,
                                text=True, env=dict(env, OMP_NUM_THREADS="1"))
    tied, free = map(int, launcher.stdout.readline().split())
    try:
        seen = []
        _read_until(launcher.stdout, "ready", 120, seen)
        _read_until(launcher.stdout, "ready", 120, seen)
        launcher.kill()  # SIGKILL: the launcher gets no chance to stop its children
        launcher.wait()
        assert _wait_gone([tied], 10) == [], "a torchrun worker outlived its killed launcher"
        # the control: a process not started by torchrun is left alone
        assert _alive(free)
    finally:
        for pid in (tied, free):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow  # a 2-process torchrun training run
def test_killing_torchrun_stops_its_workers_with_a_checkpoint(tmp_path):
    out = str(tmp_path / "ddp")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "0", "--rdzv-backend", "c10d", "--rdzv-endpoint", "localhost:0",
           os.path.join(ROOT, "tools", "train.py"), "--config", TINY_CONFIG, "--output-dir", out,
           "--set", "solver.max_iter=100000", "solver.checkpoint_period=0",
           "runtime.log_period=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    launcher = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    workers, left, seen = [], [], []
    try:
        _read_until(launcher.stdout, "iter 2/", 240, seen)
        workers = _children(launcher.pid)
        assert len(workers) == 2, workers
        launcher.kill()
        launcher.wait()
        left = _wait_gone(workers, 60)
    finally:
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    seen += launcher.stdout.readlines()  # the workers shared the pipe; all are gone now
    text = "".join(seen)
    assert left == [], "torchrun workers outlived their killed launcher:\n" + text[-3000:]
    assert "signal 15: saved" in text, text[-3000:]
    names = [n for n in os.listdir(os.path.join(out, "checkpoints")) if n.startswith("model_")]
    assert len(names) == 1 and load_file(os.path.join(out, "checkpoints", names[0]))[
        "iteration"] >= 2


# ---------------------------------------------------------------------------------------
# Ctrl-C


def test_signal_flag_keeps_ctrl_c_quiet_once_stopping(capfd):
    old_int, old_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with SignalFlag() as flag:
            pass
        assert signal.getsignal(signal.SIGINT) is old_int  # no signal: all restored
        with SignalFlag() as flag:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # Python runs the handler at the next bytecode
            assert flag.signum == signal.SIGINT
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C during the save
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGTERM) is old_term
        try:
            os.kill(os.getpid(), signal.SIGINT)  # and one during the shutdown
            time.sleep(0.05)
        except KeyboardInterrupt:
            pytest.fail("a Ctrl-C after the stop raised KeyboardInterrupt")
        err = capfd.readouterr().err
        assert err.count("already stopping") == 2 and flag.signum == signal.SIGINT
    finally:
        signal.signal(signal.SIGINT, old_int)


def test_run_main_turns_ctrl_c_into_one_line(capsys):
    old = signal.getsignal(signal.SIGINT)

    def main():
        raise KeyboardInterrupt

    try:
        assert run_main(main) == 130
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)
    assert capsys.readouterr().err == "interrupted (Ctrl-C)\n"


def _slow_train(out, tmp_path, **env_extra):
    cmd = [sys.executable, os.path.join(ROOT, "tests", "reliability", "slow_train.py"),
           "--config", TINY_CONFIG, "--output-dir", out, "--set", "solver.max_iter=100000",
           "solver.checkpoint_period=0", "runtime.log_period=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **env_extra)
    err = open(tmp_path / "stderr.txt", "w+")
    # A shell that starts pytest in the background (`make test &`) makes SIGINT ignored, and
    # a Python started with SIGINT ignored never raises KeyboardInterrupt: restore the default.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err,
                            text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return proc, err


@pytest.mark.slow  # trains the tiny model in a subprocess
def test_second_ctrl_c_during_the_save_prints_no_traceback(tmp_path):
    out = str(tmp_path / "run")
    proc, err = _slow_train(out, tmp_path, SLOW_SAVE="1")
    seen = []
    _read_until(proc.stdout, "iter 2/", 240, seen)
    proc.send_signal(signal.SIGINT)
    _read_until(proc.stdout, "saving model_", 60, seen)
    proc.send_signal(signal.SIGINT)  # inside the save
    _read_until(proc.stdout, "shutting down", 60, seen)
    proc.send_signal(signal.SIGINT)  # while the interpreter exits
    seen += proc.stdout.readlines()
    proc.wait(timeout=60)
    err.seek(0)
    stderr = err.read()
    assert proc.returncode == 128 + signal.SIGINT, stderr + "".join(seen)[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.count("already stopping") == 2, stderr
    names = [n for n in os.listdir(os.path.join(out, "checkpoints")) if n.startswith("model_")]
    assert len(names) == 1
    assert load_file(os.path.join(out, "checkpoints", names[0]))["iteration"] >= 2


@pytest.mark.slow  # starts tools/train.py in a subprocess
def test_ctrl_c_before_training_is_one_line(tmp_path):
    proc, err = _slow_train(str(tmp_path / "run"), tmp_path, SLOW_BUILD="1")
    _read_until(proc.stdout, "building", 240, [])
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    err.seek(0)
    stderr = err.read()
    assert proc.returncode == 130 and stderr == "interrupted (Ctrl-C)\n", stderr
