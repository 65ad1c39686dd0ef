"""SGD / AdamW with per-module learning-rate multipliers and the warmup + step/cosine schedule."""
import bisect
import logging
import math
from typing import Dict, List, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm)


def _is_norm(module: nn.Module) -> bool:
    # FrozenBatchNorm2d has no parameters, so only trainable norms matter here.
    return isinstance(module, _NORM_TYPES)


def param_groups(model: nn.Module, *, base_lr: float, weight_decay: float,
                 weight_decay_norm: float, bias_lr_factor: float) -> List[Dict]:
    """One optimizer group per trainable parameter with its own lr and weight decay.

    A module may carry a float attribute ``lr_mult`` (the offset convs of deformable layers,
    the R-FCN 1x1 conv, ...): it multiplies the learning rate of every parameter below that
    module; nested multipliers multiply.

    Args:
        model: the model; parameters with ``requires_grad=False`` are left out.
        base_lr: the learning rate of a parameter with no multiplier.
        weight_decay: L2 weight decay of conv/linear weights and biases.
        weight_decay_norm: weight decay of normalisation-layer parameters.
        bias_lr_factor: extra lr factor for parameters named ``bias``.

    Returns:
        A list of dicts for ``torch.optim.SGD`` (``params``, ``lr``, ``weight_decay``, ``name``).
    """
    groups = []
    seen = set()

    def visit(module: nn.Module, prefix: str, mult: float) -> None:
        mult = mult * float(getattr(module, "lr_mult", 1.0))
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            lr = base_lr * mult * (bias_lr_factor if pname == "bias" else 1.0)
            wd = weight_decay_norm if _is_norm(module) else weight_decay
            groups.append({"params": [p], "lr": lr, "weight_decay": wd,
                           "name": f"{prefix}{pname}"})
        for cname, child in module.named_children():
            visit(child, f"{prefix}{cname}.", mult)

    visit(model, "", 1.0)
    return groups


OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(model: nn.Module, solver_cfg) -> torch.optim.Optimizer:
    """The optimizer of ``cfg.solver`` over :func:`param_groups` of ``model``.

    ``"sgd"``: SGD with ``momentum`` and L2 ``weight_decay`` (the papers' recipe for
    fine-tuning a pretrained backbone). ``"adamw"``: AdamW with decoupled ``weight_decay`` and
    ``betas``; it trains a randomly initialised model much faster in a short schedule (the demo).
    """
    groups = param_groups(model, base_lr=solver_cfg.base_lr,
                          weight_decay=solver_cfg.weight_decay,
                          weight_decay_norm=solver_cfg.weight_decay_norm,
                          bias_lr_factor=solver_cfg.bias_lr_factor)
    for g in groups:
        g["initial_lr"] = g["lr"]
    if solver_cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=solver_cfg.base_lr, momentum=solver_cfg.momentum)
    if solver_cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=solver_cfg.base_lr, betas=tuple(solver_cfg.betas))
    raise ValueError(f"solver.optimizer must be one of {OPTIMIZERS}, got {solver_cfg.optimizer!r}")


class WarmupLR:
    """Sets every group's lr to ``initial_lr * factor(iteration)`` once per iteration.

    ``factor`` ramps linearly from ``warmup_factor`` to 1 over ``warmup_iters``, times the decay:
    ``gamma ** (number of steps passed)`` for ``"step"``, a half cosine to 0 at ``max_iter``
    for ``"cosine"``. The only state is the iteration, so resuming is exact.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, schedule: str, max_iter: int,
                 steps: Sequence[int] = (), gamma: float = 0.1, warmup_iters: int = 0,
                 warmup_factor: float = 0.001):
        if schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be 'step' or 'cosine', got {schedule!r}")
        if list(steps) != sorted(steps):
            raise ValueError(f"solver.steps must be increasing, got {list(steps)}")
        late = [x for x in steps if x >= max_iter]
        if late and schedule == "step":
            # Allowed so that a short smoke run (--set solver.max_iter=10) keeps its config.
            logger.warning("solver.steps %s are not below solver.max_iter=%d: the lr never "
                           "decays there", late, max_iter)
        self.optimizer = optimizer
        self.schedule, self.max_iter, self.steps = schedule, max_iter, list(steps)
        self.gamma, self.warmup_iters, self.warmup_factor = gamma, warmup_iters, warmup_factor
        self.iter = 0
        self._apply()

    def factor(self, it: int) -> float:
        """The lr multiplier at iteration ``it`` (0-based)."""
        if self.schedule == "step":
            decay = self.gamma ** bisect.bisect_right(self.steps, it)
        else:
            decay = 0.5 * (1.0 + math.cos(math.pi * min(it, self.max_iter) / max(1, self.max_iter)))
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            decay *= self.warmup_factor * (1 - alpha) + alpha
        return decay

    def _apply(self) -> None:
        f = self.factor(self.iter)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f

    def step(self) -> None:
        """Advances one iteration."""
        self.iter += 1
        self._apply()

    def state_dict(self) -> Dict[str, int]:
        return {"iter": self.iter}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.iter = int(state["iter"])
        self._apply()


def build_lr_scheduler(optimizer: torch.optim.Optimizer, solver_cfg) -> WarmupLR:
    """The schedule of ``cfg.solver`` (see :class:`WarmupLR`)."""
    return WarmupLR(optimizer, schedule=solver_cfg.schedule, max_iter=solver_cfg.max_iter,
                    steps=solver_cfg.steps, gamma=solver_cfg.gamma,
                    warmup_iters=solver_cfg.warmup_iters, warmup_factor=solver_cfg.warmup_factor)
