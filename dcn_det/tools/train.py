"""Train a detector from a YAML config.

    python tools/train.py --config CFG [--set K=V ...] [--output-dir DIR] [--resume auto|PATH|none]
                          [--no-eval]
    torchrun --nproc_per_node N tools/train.py --config CFG ...

--resume auto continues an interrupted run in the output directory. A finished run (its final
checkpoint at solver.max_iter, and its final evaluation done) is not trained or evaluated
again: one line says so and where the final model is; --resume none starts over in the
folder, another --output-dir trains a new run, a larger solver.max_iter trains on.
"""
import argparse
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
    train(cfg, resume=args.resume, final_eval=not args.no_eval)
    return 0


def run(argv=None) -> int:
    """The console command: :func:`main` with user errors as one line and an exit code."""
    return run_main(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run())
