"""What one training iteration does, and how a run stops early (signals, non-finite loss).

The loop itself, with its visible ``if`` blocks, is :func:`dcn_det.engine.trainer.train`.
"""
import math
import os
import signal
from typing import Dict, NamedTuple, Optional

import torch

from dcn_det import distributed as du


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the iteration and the loss terms."""


class StopRequested(SystemExit):
    """SIGTERM/SIGINT arrived: a checkpoint was written at the iteration boundary."""


class StepResult(NamedTuple):
    """What :func:`run_step` reports: loss values (mean over ranks) and the step's lr."""

    losses: Dict[str, float]
    lr: float


class SignalFlag:
    """Records SIGTERM/SIGINT instead of dying mid-step.

    Without a signal, leaving the block restores the old handlers. After a signal the process
    is stopping, and a second signal must not break the checkpoint save or the shutdown into a
    traceback: inside the block it is only recorded; after the block SIGTERM gets its old
    handler back (by default it ends the process at once), while SIGINT stays recorded-only
    until the process exits, so a second Ctrl-C prints one note instead of a
    ``KeyboardInterrupt`` traceback.
    """

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
        if self.signum is not None:
            # os.write: the logging and print machinery may be mid-call in this thread.
            os.write(2, f"signal {signum} again: already stopping (the current step ends, "
                        "then a checkpoint is saved); please wait\n".encode())
            return
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            if not (self.signum is not None and s == signal.SIGINT):
                signal.signal(s, h)
        return False


def run_step(model: torch.nn.Module, batch, optimizer: torch.optim.Optimizer, scheduler, *,
             iteration: int, device: torch.device, amp: bool,
             scaler: Optional[torch.amp.GradScaler], clip_grad_norm: float) -> StepResult:
    """One training iteration: forward, loss check, backward, optimizer and schedule step.

    Args:
        model: the (possibly DDP-wrapped) detector in training mode; ``model(images,
            targets)`` returns a dict of losses whose keys start with ``loss_``.
        batch: ``(images, targets)`` lists (DESIGN 3), moved to ``device`` here.
        optimizer, scheduler: see :mod:`dcn_det.engine.optim`; the scheduler steps once.
        iteration: the 0-based iteration, for the error message.
        device: where the batch goes.
        amp: autocast to float16 on CUDA (ignored elsewhere).
        scaler: the AMP grad scaler (CUDA + amp) or None.
        clip_grad_norm: max global grad norm, 0 = no clipping.

    Returns:
        The loss values averaged over all ranks (what is logged) and the learning rate the
        step used.

    Raises:
        NonFiniteLossError: a loss is not finite on any rank (the averaged value then is not
            finite either, so every rank raises); no parameter was changed.
    """
    images, targets = batch
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()}
               for t in targets]
    use_amp = amp and device.type == "cuda"
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
        loss_dict = model(images, targets)
    losses = sum(loss_dict.values())
    values = du.reduce_mean({k: v.detach() for k, v in loss_dict.items()})
    if not all(math.isfinite(v) for v in values.values()):
        raise NonFiniteLossError(
            f"non-finite loss at iteration {iteration + 1} (mean over ranks): "
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
    return StepResult(values, lr)
