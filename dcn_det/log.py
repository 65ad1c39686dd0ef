"""The ``dcn_det`` logger and its setup: the console on rank 0, and a log file per run.

Records logged with ``extra=FILE_ONLY`` go to the log file but not to the console: a
traceback belongs in ``log.txt``, while the console keeps the one line a command-line tool
prints for a user error (``cli.run_main``).
"""
import functools
import logging
import sys
from typing import Callable, Optional

logger = logging.getLogger("dcn_det")

FILE_ONLY = {"file_only": True}


class _NotFileOnly(logging.Filter):
    """Keeps a console handler from showing ``FILE_ONLY`` records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


def setup_logging(output_file: Optional[str] = None, rank: int = 0) -> None:
    """Configures the ``dcn_det`` logger: INFO to stdout on rank 0 (WARNING elsewhere), and
    everything, ``FILE_ONLY`` records included, to ``output_file`` on rank 0."""
    root = logging.getLogger("dcn_det")
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    root.propagate = False
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    fmt = logging.Formatter("[%(asctime)s %(name)s] %(message)s", "%m/%d %H:%M:%S")
    sh = logging.StreamHandler(sys.stdout)
    sh.setFormatter(fmt)
    sh.addFilter(_NotFileOnly())
    root.addHandler(sh)
    if output_file and rank == 0:
        fh = logging.FileHandler(output_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)


def log_traceback(message: str, *args) -> None:
    """Logs ``message`` and the exception being handled, with its traceback, to the log file
    only (call it from an ``except`` block)."""
    logger.error(message, *args, exc_info=True, extra=FILE_ONLY)


def logs_traceback(what: str) -> Callable[[Callable], Callable]:
    """Decorator: an ``Exception`` escaping the function is logged as ``"<what> stopped by
    <type>: <message>"`` with its traceback (:func:`log_traceback`, the log file only), then
    re-raised. ``SystemExit`` (a requested stop) and ``KeyboardInterrupt`` pass untouched."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def logged(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                log_traceback("%s stopped by %s: %s", what, type(e).__name__, e)
                raise
        return logged
    return wrap
