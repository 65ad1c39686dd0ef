"""Argument checks shared by the op wrappers.

Every message names the argument, the shape it got and the shape it needs, so a bad call
fails in Python with a ValueError instead of reaching a kernel.
"""
from typing import Sequence

import torch


def check_tensor(t, name: str, ndim: int, layout: str) -> None:
    """Raises ValueError unless ``t`` is a tensor of rank ``ndim``.

    Args:
        t: the value to check.
        name: the argument's name, as the user wrote it.
        ndim: required rank.
        layout: the expected shape in words, e.g. ``"(N, C, H, W)"``.
    """
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {layout}, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(
            f"{name} must have shape {layout} ({ndim} dims), got shape {tuple(t.shape)}")


def check_same(ref: torch.Tensor, ref_name: str, others: Sequence[tuple]) -> None:
    """Raises ValueError if any of ``others`` differs from ``ref`` in device or dtype.

    Args:
        ref: the tensor that fixes the device and dtype (usually ``input``).
        ref_name: its argument name.
        others: ``(name, tensor_or_None)`` pairs; ``None`` entries are skipped.
    """
    for name, t in others:
        if t is None:
            continue
        if t.device != ref.device:
            raise ValueError(
                f"{name} is on {t.device} but {ref_name} is on {ref.device}; "
                "all tensors must be on the same device")
        if t.dtype != ref.dtype:
            raise ValueError(
                f"{name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}; "
                "all floating tensors must share one dtype")


def check_floating(t: torch.Tensor, name: str) -> None:
    """Raises ValueError unless ``t`` has a floating dtype."""
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")


def check_rois(rois: torch.Tensor, name: str = "rois") -> None:
    """Raises ValueError unless ``rois`` is ``(R, 5)`` rows ``[batch_index, x1, y1, x2, y2]``."""
    check_tensor(rois, name, 2, "(R, 5) rows [batch_index, x1, y1, x2, y2]")
    if rois.size(1) != 5:
        raise ValueError(
            f"{name} must have shape (R, 5) rows [batch_index, x1, y1, x2, y2], "
            f"got shape {tuple(rois.shape)}")


def pair(v, name: str) -> tuple:
    """Turns an int or a 2-sequence into an ``(h, w)`` tuple of ints, naming ``name`` on error."""
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return (int(v[0]), int(v[1]))
    raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")

