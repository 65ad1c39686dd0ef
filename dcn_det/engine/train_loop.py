"""The plain training loop: batch -> forward -> losses -> backward -> step -> schedule.

Everything periodic (logging, checkpoints, evaluation) is a visible ``if`` block in
:func:`train_loop`; there are no hooks.
"""
import math
import signal
import time
from typing import Callable, Dict, Iterator, Optional

import torch

from dcn_det import distributed as du
from dcn_det.engine.logging import MetricLogger, logger


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the iteration and the loss terms."""


class StopRequested(SystemExit):
    """SIGTERM/SIGINT arrived: a checkpoint was written at the iteration boundary."""


class _SignalFlag:
    """Records SIGTERM/SIGINT instead of dying mid-step; restores the old handlers on exit."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                pass
        return self

    def _handle(self, signum, frame):  # noqa: ARG002
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


def train_loop(*, model: torch.nn.Module, data_iter: Iterator, optimizer: torch.optim.Optimizer,
               scheduler, make_state: Callable[[int], Dict], save: Callable[[str, Dict], str],
               evaluate: Optional[Callable[[int], Dict]], start_iter: int, max_iter: int,
               log_period: int, checkpoint_period: int, eval_period: int,
               device: torch.device, amp: bool, scaler: Optional[torch.amp.GradScaler],
               clip_grad_norm: float, metric_logger: MetricLogger,
               inject_nan_at_iter: int = -1) -> None:
    """Trains from ``start_iter`` up to ``max_iter`` (exclusive, 0-based iterations).

    Args:
        model: the (possibly DDP-wrapped) detector; ``model(images, targets)`` returns a dict
            of losses whose keys start with ``loss_``.
        data_iter: infinite iterator of ``(images, targets)`` batches (lists, DESIGN.md 3).
        optimizer, scheduler: see :mod:`dcn_det.engine.optim`; the scheduler steps once per
            iteration.
        make_state: ``iteration -> checkpoint dict`` (model, optimizer, ..., iteration).
        save: ``(name, state) -> path`` writes a checkpoint (only called on rank 0).
        evaluate: ``iteration -> metrics`` or None; called every ``eval_period`` iterations.
        start_iter, max_iter: the iteration range.
        log_period, checkpoint_period, eval_period: periods in iterations (0 = never).
        device: where the batch goes.
        amp: autocast to float16 on CUDA (ignored elsewhere).
        scaler: the AMP grad scaler (CUDA + amp) or None.
        clip_grad_norm: max global grad norm, 0 = no clipping.
        metric_logger: console/TensorBoard writer.
        inject_nan_at_iter: test hook: the loss of this iteration is made NaN.

    Raises:
        NonFiniteLossError: a loss is not finite on any rank; nothing is saved for that step.
        StopRequested: after SIGTERM/SIGINT, once the checkpoint of the last finished
            iteration is written (exit code 128 + signal number).
    """
    model.train()
    is_main = du.is_main_process()
    use_amp = amp and device.type == "cuda"
    with _SignalFlag() as flag:
        for it in range(start_iter, max_iter):
            t0 = time.perf_counter()
            images, targets = next(data_iter)
            images = [im.to(device, non_blocking=True) for im in images]
            targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()}
                       for t in targets]
            data_time = time.perf_counter() - t0

            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                loss_dict = model(images, targets)
            losses = sum(loss_dict.values())
            if it == inject_nan_at_iter:
                losses = losses * float("nan")
            values = {k: float(v.detach()) for k, v in loss_dict.items()}
            bad = not math.isfinite(float(losses.detach()))
            if du.any_true(bad, device):
                raise NonFiniteLossError(
                    f"non-finite loss at iteration {it + 1}: total={float(losses.detach())}, "
                    + ", ".join(f"{k}={v}" for k, v in values.items())
                    + "; training stopped, the last good checkpoint is kept")

            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(losses).backward()
                scaler.unscale_(optimizer)
            else:
                losses.backward()
            if clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            iter_time = time.perf_counter() - t0

            done = it + 1
            metric_logger.update(values, data_time, iter_time)
            if log_period and (done % log_period == 0 or done == max_iter) and is_main:
                metric_logger.log(it, lr)
            if checkpoint_period and done % checkpoint_period == 0 and done < max_iter and is_main:
                save(f"model_{it:07d}.pth", make_state(done))
            if evaluate is not None and eval_period and done % eval_period == 0 and done < max_iter:
                evaluate(done)
                model.train()
            if du.any_true(flag.signum is not None, device):
                signum = flag.signum or signal.SIGTERM
                if is_main:
                    path = save(f"model_{it:07d}.pth", make_state(done))
                    logger.warning("signal %d: saved %s at iteration %d, exiting", signum,
                                   path, done)
                raise StopRequested(128 + int(signum))
