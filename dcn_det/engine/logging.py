"""Console + TensorBoard logging of training progress with an ETA."""
import logging
import sys
import time
from typing import Dict, Optional

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


class MetricLogger:
    """Writes scalars to TensorBoard and a progress line (losses, lr, times, ETA) to the console.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` or None (non-main ranks).
        max_iter: total iterations, for the ETA.
        start_iter: the first iteration of this process (after a resume).
    """

    def __init__(self, writer, max_iter: int, start_iter: int):
        self.writer, self.max_iter, self.start_iter = writer, max_iter, start_iter
        self.t0 = time.perf_counter()

    def log(self, iteration: int, losses: Dict[str, float], lr: float,
            data_time: float, iter_time: float) -> None:
        """Logs iteration ``iteration`` (0-based, just finished)."""
        done = iteration + 1 - self.start_iter
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(done, 1) * (self.max_iter - iteration - 1)
        total = sum(losses.values())
        terms = "  ".join(f"{k}: {v:.4f}" for k, v in losses.items())
        logger.info("iter %d/%d  total_loss: %.4f  %s  lr: %.6g  data_time: %.3fs  "
                    "iter_time: %.3fs  eta: %s", iteration + 1, self.max_iter, total, terms,
                    lr, data_time, iter_time, _fmt_eta(eta))
        if self.writer is not None:
            for k, v in losses.items():
                self.writer.add_scalar(f"train/{k}", v, iteration + 1)
            self.writer.add_scalar("train/total_loss", total, iteration + 1)
            self.writer.add_scalar("train/lr", lr, iteration + 1)
            self.writer.add_scalar("train/iter_time", iter_time, iteration + 1)


def _fmt_eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
