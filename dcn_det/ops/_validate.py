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



def check_offset_layout(input_shape, offset, kernel, stride, padding, dilation,
                        channels: str = "C_in") -> tuple:
    """Checks a deformable offset ``(N, 2*G*kh*kw, H_out, W_out)`` against its input and kernel.

    Args:
        input_shape: ``(N, C, H, W)`` of the sampled input.
        offset: the offset tensor (rank already checked).
        kernel, stride, padding, dilation: ``(h, w)`` pairs.
        channels: how messages name the input's channel count (``"C_in"`` or ``"C"``).

    Returns:
        ``(G, H_out, W_out)``: the offset groups and the output size.

    Raises:
        ValueError: naming the offset's shape and the one it needs.
    """
    n, c, h, w = input_shape
    (kh, kw), taps = kernel, kernel[0] * kernel[1]
    if offset.shape[1] == 0 or offset.shape[1] % (2 * taps) != 0:
        raise ValueError(
            f"offset.size(1) must be a positive multiple of 2*kh*kw={2 * taps}, got offset shape "
            f"{tuple(offset.shape)} for a {kh}x{kw} kernel")
    og = offset.shape[1] // (2 * taps)
    if c % og != 0:
        raise ValueError(f"input channels {channels}={c} must be divisible by the offset groups "
                         f"{og} (= offset.size(1) {offset.shape[1]} / (2*{kh}*{kw}))")
    h_out = (h + 2 * padding[0] - (dilation[0] * (kh - 1) + 1)) // stride[0] + 1
    w_out = (w + 2 * padding[1] - (dilation[1] * (kw - 1) + 1)) // stride[1] + 1
    if h_out <= 0 or w_out <= 0:
        raise ValueError(
            f"input shape {tuple(input_shape)} is too small for a {kh}x{kw} kernel with "
            f"padding={padding}, dilation={dilation}, stride={stride}: output would be "
            f"({h_out}, {w_out})")
    need = (n, 2 * og * taps, h_out, w_out)
    if tuple(offset.shape) != need:
        raise ValueError(f"offset must have shape {need} (N, 2*offset_groups*kh*kw, H_out, W_out), "
                         f"got {tuple(offset.shape)}")
    return og, h_out, w_out
