"""One ablation run, in its own process: train (resuming if interrupted), then evaluate.

    python -m dcn_det.ablation.run_one RUN_DIR/run.json

Training and evaluation go through the functions behind ``tools/train.py`` and
``tools/test.py``. Each step is skipped when its result exists, so running this again
after a crash continues where the run stopped.
"""
import functools
import json
import os
import sys
from typing import Any, Dict, Optional, Tuple

from dcn_det.ablation.spec import DEFAULT_TEST, RunSpec
from dcn_det.evaluation.metrics_file import read_final_training_metrics, read_metrics

FINAL_CHECKPOINT = os.path.join("checkpoints", "model_final.pth")


def metrics_path(spec: RunSpec, test: str) -> str:
    """``metrics.json`` of test set ``test`` of the run."""
    return os.path.join(spec.test_dir(test), "metrics.json")


@functools.lru_cache(maxsize=None)
def _max_iter(config: str, overrides: Tuple[str, ...]) -> int:
    from dcn_det.config import load_config
    return load_config(config, list(overrides)).solver.max_iter


def final_metrics(spec: RunSpec, test: str) -> Optional[Dict[str, Any]]:
    """The result of the run's final model on test set ``test``, or None while it is missing.

    ``metrics.json`` has one line per evaluation (:mod:`dcn_det.evaluation.metrics_file`):
    in the run directory the training's own, of which only the line at ``solver.max_iter``
    (or an older dcn_det's single document) is final, periodic ones are not; in a test
    set's folder the last line (``tools/test.py`` of the final checkpoint).
    """
    path = metrics_path(spec, test)
    if not os.path.isfile(path):
        return None
    if test != DEFAULT_TEST:
        return read_metrics(path)
    return read_final_training_metrics(path, _max_iter(spec.config, tuple(spec.overrides)))


def is_finished(spec: RunSpec) -> bool:
    """True when every test set of the run has the final model's metrics."""
    return all(final_metrics(spec, t) is not None for t in spec.tests)


def execute(spec: RunSpec) -> None:
    """Trains the run (``resume="auto"``) and evaluates its final model on every test set."""
    from dcn_det.config import load_config
    from dcn_det.engine.trainer import train
    from dcn_det.evaluation.evaluate import evaluate_checkpoint

    if final_metrics(spec, DEFAULT_TEST) is None:
        # train() resumes from the newest valid checkpoint, and after a crash during the
        # final evaluation only evaluates.
        train(load_config(spec.config, spec.overrides), resume="auto")
    checkpoint = os.path.join(spec.run_dir, FINAL_CHECKPOINT)
    for test, extra in spec.tests.items():
        if test == DEFAULT_TEST or final_metrics(spec, test) is not None:
            continue
        out = spec.test_dir(test)
        cfg = load_config(spec.config, [*spec.overrides, *extra,
                                        f"runtime.output_dir={json.dumps(out)}"])
        evaluate_checkpoint(cfg, checkpoint)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m dcn_det.ablation.run_one RUN_DIR/run.json", file=sys.stderr)
        return 2
    with open(args[0], "r", encoding="utf-8") as f:
        spec = RunSpec.from_json(json.load(f))
    execute(spec)
    return 0


if __name__ == "__main__":
    from dcn_det.cli import run_main
    sys.exit(run_main(main))
