"""What every command-line tool shares: config arguments and clean error exits."""
import argparse
import logging
import signal
import sys
from typing import Callable, Optional

from dcn_det.config import Config, ConfigError, load_config, override_config


def add_set_arg(parser: argparse.ArgumentParser,
                help: str = "config overrides, e.g. model.backbone.depth=50 solver.max_iter=1000; "
                            "may be repeated, applied in order (the last one wins)") -> None:
    """Adds ``--set K=V [K=V ...]``, repeatable: ``--set a=1 --set b=2`` equals ``--set a=1 b=2``
    (``args.set`` is the list of all of them, in command-line order)."""
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="K=V", help=help)


def add_config_args(parser: argparse.ArgumentParser, config_required: bool = True) -> None:
    """Adds ``--config``, ``--set K=V ...`` (repeatable) and ``--output-dir``.

    Args:
        parser: the tool's parser.
        config_required: False for tools that read a model file, whose stored config is the
            default (:func:`config_from_args` with ``stored``).
    """
    parser.add_argument("--config", required=config_required, default=None,
                        help="YAML config file" if config_required else
                        "YAML config file (default: the resolved config stored in the model file)")
    add_set_arg(parser)
    parser.add_argument("--output-dir", default=None, help="overrides runtime.output_dir")


def config_from_args(args: argparse.Namespace, stored: Optional[Config] = None) -> Config:
    """Loads ``args.config`` with ``args.set`` and ``--output-dir`` applied.

    Args:
        args: parsed arguments with ``config``, ``set`` and optionally ``output_dir``.
        stored: the config of a model file, used (with ``--set`` applied) when ``--config``
            is not given.

    Raises:
        ConfigError: neither ``--config`` nor ``stored``, or an override that does not fit.
    """
    if args.config:
        cfg = load_config(args.config, args.set)
    elif stored is not None:
        cfg = override_config(stored, args.set) if args.set else stored
    else:
        raise ConfigError("--config is required")
    if getattr(args, "output_dir", None):
        cfg = override_config(cfg, [f"runtime.output_dir={args.output_dir!r}"])
    return cfg


def run_main(main: Callable[[], int]) -> int:
    """Runs ``main``; a user error (bad config, dataset, file, checkpoint, weights file, a device
    this machine does not have, an unreadable video) or a file that cannot be written (disk full, a refused link)
    exits 2 with one clear line.

    Programming errors keep their traceback. ``SystemExit`` (e.g. after SIGTERM, with the
    code 128 + signal) passes through. Ctrl-C (``KeyboardInterrupt``) exits 130 with one line,
    and a further Ctrl-C while exiting is ignored: the user asked to stop, not for a traceback.
    """
    from dcn_det.data.base import DatasetError
    from dcn_det.distributed import DeviceError
    from dcn_det.inference import VideoError
    from dcn_det.io.atomic import WriteError
    from dcn_det.io.checkpoint import CheckpointError
    from dcn_det.engine.train_loop import NonFiniteLossError
    from dcn_det.weights import WeightsError
    try:
        return main()
    except (ConfigError, CheckpointError, DatasetError, DeviceError, VideoError, WriteError,
            WeightsError, FileNotFoundError) as e:
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
