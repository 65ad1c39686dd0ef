"""Train a detector from a YAML config.

    python tools/train.py --config CFG [--set K=V ...] [--output-dir DIR] [--resume auto|PATH|none]
                          [--no-eval]
    torchrun --nproc_per_node N tools/train.py --config CFG ...
"""
import argparse
import os
import sys

from dcn_det.cli import add_config_args, config_from_args, run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--resume", default="auto",
                        help="'auto' (newest valid checkpoint in the output dir), 'none', or a path")
    parser.add_argument("--no-eval", action="store_true",
                        help="skip the evaluation after the last step (e.g. when tools/test.py "
                             "evaluates the exported model next)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    from dcn_det.engine.trainer import train
    from dcn_det.log import logger
    metrics = train(cfg, resume=args.resume, final_eval=not args.no_eval)
    if metrics:
        logger.info("final metrics written to %s", os.path.join(cfg.runtime.output_dir,
                                                                 "metrics.json"))
    return 0


def run(argv=None) -> int:
    """The console command: :func:`main` with user errors as one line and an exit code."""
    return run_main(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run())
