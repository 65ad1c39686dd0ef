"""Evaluate a training checkpoint or an exported inference file on a test split.

    python tools/test.py --checkpoint CKPT [--config CFG] [--set K=V ...] [--output-dir DIR]

Without --config the resolved config stored in CKPT is used (--set applies to it), and DIR
defaults to CKPT's name without extension plus "_test" (e.g. checkpoints/model_final_test/),
so the training run's own files are never overwritten. With --config, that file (and --set)
gives the data, test and runtime settings and DIR defaults to its runtime.output_dir; the
architecture always comes from CKPT. Writes DIR/detections.json (COCO evaluator) and
DIR/metrics.json, and prints an AP table.
"""
import argparse
import os
import sys

from dcn_det.cli import add_config_args, config_from_args, run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, config_required=False)
    parser.add_argument("--checkpoint", required=True, help="training checkpoint or inference file")
    args = parser.parse_args(argv)
    from dcn_det.evaluation.evaluate import evaluate_checkpoint
    from dcn_det.io.model_file import read_model_file
    model_file = None
    if args.config is None:
        # only the file is read: building the test set is evaluate_checkpoint's job
        model_file = read_model_file(args.checkpoint)
        if not args.output_dir:
            args.output_dir = os.path.splitext(args.checkpoint)[0] + "_test"
    cfg = config_from_args(args, stored=model_file[0] if model_file else None)
    evaluate_checkpoint(cfg, args.checkpoint, model_file=model_file)
    return 0


def run(argv=None) -> int:
    """The console command: :func:`main` with user errors as one line and an exit code."""
    return run_main(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run())
