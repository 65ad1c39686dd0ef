"""The ``dcn_det`` logger and its setup: the console on rank 0, and a log file per run."""
import logging
import sys
from typing import Optional

logger = logging.getLogger("dcn_det")


def setup_logging(output_file: Optional[str] = None, rank: int = 0) -> None:
    """Configures the ``dcn_det`` logger: INFO to stdout on rank 0 (WARNING elsewhere)."""
    root = logging.getLogger("dcn_det")
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    root.propagate = False
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = logging.Formatter("[%(asctime)s %(name)s] %(message)s", "%m/%d %H:%M:%S")
    sh = logging.StreamHandler(sys.stdout)
    sh.setFormatter(fmt)
    root.addHandler(sh)
    if output_file and rank == 0:
        fh = logging.FileHandler(output_file)
        fh.setFormatter(fmt)
        root.addHandler(fh)
