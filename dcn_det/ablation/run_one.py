"""One ablation run, in its own process: train (resuming if interrupted), then evaluate.

    python -m dcn_det.ablation.run_one RUN_DIR/run.json

Training and evaluation go through the functions behind ``tools/train.py`` and
``tools/test.py``. Each step is skipped when its result exists, so running this again
after a crash continues where the run stopped.
"""
import json
import os
import sys

from dcn_det.ablation.spec import DEFAULT_TEST, RunSpec

FINAL_CHECKPOINT = os.path.join("checkpoints", "model_final.pth")


def metrics_path(spec: RunSpec, test: str) -> str:
    """``metrics.json`` of test set ``test`` of the run."""
    return os.path.join(spec.test_dir(test), "metrics.json")


def is_finished(spec: RunSpec) -> bool:
    """True when every test set of the run has its ``metrics.json``."""
    return all(os.path.isfile(metrics_path(spec, t)) for t in spec.tests)


def execute(spec: RunSpec) -> None:
    """Trains the run (``resume="auto"``) and evaluates its final model on every test set."""
    from dcn_det.config import load_config
    from dcn_det.engine.trainer import train
    from dcn_det.evaluation.evaluate import evaluate_checkpoint

    if not os.path.isfile(metrics_path(spec, DEFAULT_TEST)):
        # train() resumes from the newest valid checkpoint, and after a crash during the
        # final evaluation only evaluates.
        train(load_config(spec.config, spec.overrides), resume="auto")
    checkpoint = os.path.join(spec.run_dir, FINAL_CHECKPOINT)
    for test, extra in spec.tests.items():
        if test == DEFAULT_TEST or os.path.isfile(metrics_path(spec, test)):
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
