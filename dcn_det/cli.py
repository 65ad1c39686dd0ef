"""What every command-line tool shares: config arguments and clean error exits."""
import argparse
import logging
import signal
import sys
from typing import Callable

from dcn_det.config import ConfigError, load_config, override_config


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """Adds ``--config``, ``--set K=V ...`` and ``--output-dir``."""
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--set", nargs="+", default=[], metavar="K=V",
                        help="overrides, e.g. model.backbone.depth=50 solver.max_iter=1000")
    parser.add_argument("--output-dir", default=None, help="overrides runtime.output_dir")


def config_from_args(args: argparse.Namespace):
    """Loads ``args.config`` with ``args.set`` and ``--output-dir`` applied."""
    cfg = load_config(args.config, args.set)
    if args.output_dir:
        cfg = override_config(cfg, [f"runtime.output_dir={args.output_dir!r}"])
    return cfg


def run_main(main: Callable[[], int]) -> int:
    """Runs ``main``; a user error (bad config, dataset, file, checkpoint, weights file) or a file
    that cannot be written (disk full, a refused link) exits 2 with one clear line.

    Programming errors keep their traceback. ``SystemExit`` (e.g. after SIGTERM, with the
    code 128 + signal) passes through. Ctrl-C (``KeyboardInterrupt``) exits 130 with one line,
    and a further Ctrl-C while exiting is ignored: the user asked to stop, not for a traceback.
    """
    from dcn_det.data.base import DatasetError
    from dcn_det.io.atomic import WriteError
    from dcn_det.io.checkpoint import CheckpointError
    from dcn_det.engine.train_loop import NonFiniteLossError
    from dcn_det.weights import WeightsError
    try:
        return main()
    except (ConfigError, CheckpointError, DatasetError, WriteError, WeightsError,
            FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        logging.getLogger("dcn_det").error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        _ignore_further_interrupts()
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return 128 + signal.SIGINT


def _ignore_further_interrupts() -> None:
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass
