"""Console + TensorBoard logging of training progress with an ETA."""
import statistics
import time
from collections import deque
from typing import Deque, Dict

from dcn_det.log import logger


class MetricLogger:
    """Writes scalars to TensorBoard and a progress line (losses, lr, times, ETA) to the console.

    Every iteration is recorded with :meth:`update`; :meth:`log` reports the median of each
    value over the last ``window`` iterations (as detectron2 does): a single iteration's losses
    swing by 2x with the sampled RoIs, which hides the trend.

    Args:
        writer: a ``torch.utils.tensorboard.SummaryWriter`` or None (non-main ranks).
        max_iter: total iterations, for the ETA.
        start_iter: the first iteration of this process (after a resume).
        window: iterations the logged medians cover.
    """

    def __init__(self, writer, max_iter: int, start_iter: int, window: int = 20):
        self.writer, self.max_iter, self.start_iter = writer, max_iter, start_iter
        self.t0 = time.perf_counter()
        self.history: Dict[str, Deque[float]] = {}
        self.window = max(1, int(window))

    def update(self, losses: Dict[str, float], data_time: float, iter_time: float) -> None:
        """Records one iteration's loss terms and times."""
        values = dict(losses, total_loss=sum(losses.values()), data_time=data_time,
                      iter_time=iter_time)
        for k, v in values.items():
            self.history.setdefault(k, deque(maxlen=self.window)).append(float(v))

    def median(self, key: str) -> float:
        """Median of ``key`` over the recorded window (``nan`` before any :meth:`update`)."""
        values = self.history.get(key)
        return statistics.median(values) if values else float("nan")

    def log(self, iteration: int, lr: float) -> None:
        """Logs iteration ``iteration`` (0-based, just finished) with the window's medians."""
        done = iteration + 1 - self.start_iter
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / max(done, 1) * (self.max_iter - iteration - 1)
        names = [k for k in self.history if k not in ("total_loss", "data_time", "iter_time")]
        medians = {k: self.median(k) for k in ["total_loss"] + names}
        terms = "  ".join(f"{k}: {v:.4f}" for k, v in medians.items())
        logger.info("iter %d/%d  %s  lr: %.6g  data_time: %.3fs  iter_time: %.3fs  eta: %s",
                    iteration + 1, self.max_iter, terms, lr, self.median("data_time"),
                    self.median("iter_time"), _fmt_eta(eta))
        if self.writer is not None:
            for k, v in medians.items():
                self.writer.add_scalar(f"train/{k}", v, iteration + 1)
            self.writer.add_scalar("train/lr", lr, iteration + 1)
            self.writer.add_scalar("train/iter_time", self.median("iter_time"), iteration + 1)


def _fmt_eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
