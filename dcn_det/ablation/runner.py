"""Runs the planned ablation runs, a few at a time, each in its own process.

A finished run (every test set has its final ``metrics.json`` line) is skipped; an unfinished one is
started again and resumes from its newest checkpoint (see ``run_one``). Each run's console
output is appended to ``RUN_DIR/stdout.log``.
"""
import json
import logging
import os
import subprocess
import sys
import time
from typing import Callable, List, Optional, Sequence

from dcn_det.ablation.run_one import is_finished
from dcn_det.ablation.spec import RunSpec
from dcn_det.config import ConfigError
from dcn_det.io.atomic import write_json

logger = logging.getLogger("dcn_det")

# A launcher starts one run and returns a handle with poll() -> None | exit code.
Launcher = Callable[[RunSpec, str, int], "subprocess.Popen"]


def write_spec(spec: RunSpec) -> str:
    """Writes ``run.json`` in the run directory, or checks it against an existing one.

    Raises:
        ConfigError: the directory holds a run started with another spec (the message names
            the directory and both override lists).
    """
    os.makedirs(spec.run_dir, exist_ok=True)
    path = os.path.join(spec.run_dir, "run.json")
    data = spec.to_json()
    if os.path.isfile(path):
        try:
            with open(path, "r", encoding="utf-8") as f:
                old = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: unreadable run spec ({e}); delete the run directory "
                              "to start this run over") from None
        if old != data:
            raise ConfigError(
                f"{spec.run_dir} holds a run of another definition: it was started with "
                f"config {old.get('config')!r}, overrides {old.get('overrides')}, test sets "
                f"{old.get('tests')}; now config {data['config']!r}, overrides "
                f"{data['overrides']}, test sets {data['tests']}. Use another --output-dir "
                "or delete that run directory")
        return path
    return write_json(path, data)


def subprocess_launcher(spec: RunSpec, spec_path: str, threads: int) -> subprocess.Popen:
    """Starts ``python -m dcn_det.ablation.run_one`` for one run with ``threads`` threads."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    log = open(os.path.join(spec.run_dir, "stdout.log"), "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "dcn_det.ablation.run_one", spec_path],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    finally:
        log.close()  # the child holds its own descriptor


def run_all(runs: Sequence[RunSpec], nproc: int = 1, threads: Optional[int] = None,
            launcher: Launcher = subprocess_launcher, poll_seconds: float = 1.0) -> List[str]:
    """Runs every unfinished run, ``nproc`` at a time.

    Args:
        runs: from :func:`dcn_det.ablation.plan_runs`.
        nproc: runs executed at once.
        threads: intra-op threads per run; default ``cpu_count // nproc`` (at least 1).
        launcher: starts a run (tests substitute an in-process one).
        poll_seconds: how often running processes are checked.

    Returns:
        The run directories that failed (non-zero exit, or no metrics afterwards); a failed
        run does not stop the others.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    threads = threads or max(1, (os.cpu_count() or 1) // nproc)
    todo = []
    for spec in runs:
        path = write_spec(spec)  # checks every directory before anything starts
        if is_finished(spec):
            logger.info("skip %s seed %d: finished (%s)", spec.variant, spec.seed, spec.run_dir)
        else:
            todo.append((spec, path))
    failed: List[str] = []
    running = []
    while todo or running:
        while todo and len(running) < nproc:
            spec, path = todo.pop(0)
            resumed = os.path.isdir(os.path.join(spec.run_dir, "checkpoints"))
            logger.info("%s %s seed %d in %s", "resume" if resumed else "start", spec.variant,
                        spec.seed, spec.run_dir)
            running.append((spec, launcher(spec, path, threads), time.time()))
        for item in list(running):
            spec, proc, started = item
            code = proc.poll()
            if code is None:
                continue
            running.remove(item)
            if code != 0 or not is_finished(spec):
                failed.append(spec.run_dir)
                logger.error("FAILED %s seed %d (exit %s); see %s", spec.variant, spec.seed,
                             code, os.path.join(spec.run_dir, "stdout.log"))
            else:
                logger.info("done %s seed %d in %.0f s", spec.variant, spec.seed,
                            time.time() - started)
        if running:
            time.sleep(poll_seconds)
    return failed
