"""Evaluate a training checkpoint or an exported inference file on the config's test split.

    python tools/test.py --config CFG --checkpoint CKPT [--set K=V ...] [--output-dir DIR]

Writes DIR/detections.json (COCO evaluator) and DIR/metrics.json, and prints an AP table.
"""
import argparse
import os
import sys

from dcn_det.cli import add_config_args, config_from_args, run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--checkpoint", required=True, help="training checkpoint or inference file")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    from dcn_det.evaluation.evaluate import evaluate_checkpoint
    evaluate_checkpoint(cfg, args.checkpoint)
    return 0


def run(argv=None) -> int:
    """The console command: :func:`main` with user errors as one line and an exit code."""
    return run_main(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run())
