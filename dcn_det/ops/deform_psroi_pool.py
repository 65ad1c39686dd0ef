"""Deformable position-sensitive RoI pooling (the official ``DeformablePSROIPooling``).

``deform_psroi_pool`` wraps ``torch.ops.dcn_det.deform_psroi_pool`` (semantics in
docs/DESIGN.md section 4.2) with argument checks, a fake kernel, an autograd formula and
a float32 fallback for half inputs on CPU. ``DeformPSRoIPool`` owns the offset branch in the two
forms of the paper: R-FCN's per-class offset maps ("conv") and the deformable Faster R-CNN's
fc on the pooled features ("fc").
"""
from typing import Optional

import torch
from torch import nn

from dcn_det.ops import _validate

_OP = "dcn_det::deform_psroi_pool"
_BWD = "dcn_det::_deform_psroi_pool_backward"


def _check_args(input, rois, offset, output_dim, group_size, pooled_size, part_size,
                sample_per_part, mixed_dtypes_ok=False) -> None:
    """Raises ValueError naming the argument, the shape it got and the shape it needs.

    ``mixed_dtypes_ok`` (under autocast) lets rois/offset differ from input in dtype.
    """
    for name, v in (("output_dim", output_dim), ("group_size", group_size),
                    ("pooled_size", pooled_size), ("part_size", part_size),
                    ("sample_per_part", sample_per_part)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    _validate.check_tensor(input, "input", 4, "(N, output_dim*group_size**2, H, W)")
    _validate.check_floating(input, "input")
    if input.size(2) == 0 or input.size(3) == 0:
        raise ValueError(f"input must have a non-empty spatial size (H, W), got shape "
                         f"{tuple(input.shape)}")
    need = output_dim * group_size * group_size
    if input.size(1) != need:
        raise ValueError(
            f"input must have output_dim*group_size**2 = {output_dim}*{group_size}**2 = {need} "
            f"channels, got shape {tuple(input.shape)}")
    _validate.check_rois(rois)
    if offset is not None:
        _validate.check_tensor(offset, "offset", 4, "(R, 2*C_off, part_size, part_size)")
        R = rois.size(0)
        if (offset.size(0) != R or offset.size(1) == 0 or offset.size(1) % 2
                or offset.size(2) != part_size or offset.size(3) != part_size):
            raise ValueError(
                f"offset must have shape (R, 2*C_off, part_size, part_size) = "
                f"({R}, 2*C_off, {part_size}, {part_size}), got shape {tuple(offset.shape)}")
        if output_dim % (offset.size(1) // 2):
            raise ValueError(
                f"output_dim ({output_dim}) must be divisible by the number of offset classes "
                f"C_off = offset.size(1)/2 = {offset.size(1) // 2} (offset shape "
                f"{tuple(offset.shape)})")
    if mixed_dtypes_ok:
        for name, t in (("rois", rois), ("offset", offset)):
            if t is not None:
                _validate.check_floating(t, name)
                if t.device != input.device:
                    raise ValueError(f"{name} is on {t.device} but input is on {input.device}; "
                                     "all tensors must be on the same device")
    else:
        _validate.check_same(input, "input", [("rois", rois), ("offset", offset)])


def deform_psroi_pool(input: torch.Tensor, rois: torch.Tensor, offset: Optional[torch.Tensor],
                      spatial_scale: float, output_dim: int, group_size: int, pooled_size: int,
                      part_size: Optional[int] = None, sample_per_part: int = 4,
                      trans_std: float = 0.0) -> torch.Tensor:
    """Deformable PS-RoI pooling: the official operator, differentiable in input and offset.

    ``group_size=G>1`` is R-FCN's position-sensitive pooling (bin ``(ph, pw)`` of class map
    ``c`` reads input channel ``(c*G + gh)*G + gw``); ``group_size=1`` is plain deformable RoI
    pooling; ``offset=None`` disables the deformation.

    Args:
        input: ``(N, output_dim*group_size**2, H, W)`` feature map.
        rois: ``(R, 5)`` rows ``[batch_index, x1, y1, x2, y2]`` in input-image pixels (integral
            batch index in ``[0, N)``); the coordinates are rounded to whole pixels as in the
            official operator. Receives no gradient.
        offset: ``None`` or ``(R, 2*C_off, part_size, part_size)`` normalised offsets with
            ``output_dim % C_off == 0``; channels ``2k`` / ``2k+1`` shift the bins of channel
            group ``k`` by ``offset * trans_std * roi_width`` / ``... * roi_height``.
        spatial_scale: feature-map pixels per image pixel (1/16 for stride 16).
        output_dim: output channels (classes for R-FCN's score maps).
        group_size: ``G``, position-sensitive grid of the input channels.
        pooled_size: ``P``, output bins per side.
        part_size: offset grid per side (default ``pooled_size``).
        sample_per_part: bilinear samples per bin side (``S*S`` per bin, averaged).
        trans_std: scale of the offsets.

    Returns:
        ``(R, output_dim, P, P)`` with the input's dtype (float32 under CPU autocast;
        float16/bfloat16 inputs on CPU are computed in float32).
    """
    part_size = pooled_size if part_size is None else part_size
    on_cpu = isinstance(input, torch.Tensor) and input.device.type == "cpu"
    # Under CPU autocast, features are often bfloat16 while the RoIs stay float32.
    autocast = on_cpu and torch.is_autocast_enabled("cpu")
    _check_args(input, rois, offset, output_dim, group_size, pooled_size, part_size,
                sample_per_part, mixed_dtypes_ok=autocast)
    args = (float(spatial_scale), output_dim, group_size, pooled_size, part_size,
            sample_per_part, float(trans_std))
    if on_cpu and (autocast or input.dtype in (torch.float16, torch.bfloat16)):
        # The CPU kernel has no half version: compute in float32 and return in the input's
        # dtype, or in float32 under autocast (the op's autocast policy).
        off32 = None if offset is None else offset.float()
        out, _ = torch.ops.dcn_det.deform_psroi_pool(input.float(), rois.float(), off32, *args)
        return out if autocast else out.to(input.dtype)
    out, _ = torch.ops.dcn_det.deform_psroi_pool(input, rois, offset, *args)
    return out


@torch.library.register_fake(_OP)
def _fake(input, rois, offset, spatial_scale, output_dim, group_size, pooled_size, part_size,
          sample_per_part, trans_std):
    shape = (rois.size(0), output_dim, pooled_size, pooled_size)
    return input.new_empty(shape), input.new_empty(shape)


@torch.library.register_fake(_BWD)
def _fake_backward(grad_output, input, rois, offset, count, spatial_scale, output_dim,
                   group_size, pooled_size, part_size, sample_per_part, trans_std):
    grad_offset = input.new_empty((0,)) if offset is None else offset.new_empty(offset.shape)
    return input.new_empty(input.shape), grad_offset


def _setup_context(ctx, inputs, output):
    input, rois, offset = inputs[:3]
    ctx.args = inputs[3:]
    ctx.has_offset = offset is not None
    ctx.save_for_backward(input, rois, offset, output[1])


def _backward(ctx, grad_output, _grad_count):
    input, rois, offset, count = ctx.saved_tensors
    if not ctx.has_offset:
        offset = None
    grad_input, grad_offset = torch.ops.dcn_det._deform_psroi_pool_backward(
        grad_output, input, rois, offset, count, *ctx.args)
    return (grad_input, None, grad_offset if ctx.has_offset else None) + (None,) * 7


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)
# Under CPU autocast (bfloat16) the op runs in float32: the kernel has no half version and the
# averages of many samples are where half precision hurts most.
torch.library.register_autocast(_OP, "cpu", torch.float32)


class DeformPSRoIPool(nn.Module):
    """Deformable PS-RoI pooling as a module: the op with its fixed arguments, no parameters.

    The offsets come from the caller (the box heads own the branches that predict them:
    R-FCN's per-class conv in ``rfcn_head.py``, Faster R-CNN's fc in ``fast_rcnn_head.py``).

    Args:
        spatial_scale: feature-map pixels per image pixel (1/16 for stride 16).
        output_dim: output channels ``C``; ``x`` has ``C*G*G`` channels.
        group_size: ``G`` (7 for R-FCN, 1 for deformable RoI pooling).
        pooled_size: ``P``, output bins per side.
        part_size: offset grid per side (default ``pooled_size``).
        sample_per_part: bilinear samples per bin side.
        trans_std: scale of the offsets.
    """

    def __init__(self, spatial_scale: float, output_dim: int, group_size: int, pooled_size: int,
                 part_size: Optional[int] = None, sample_per_part: int = 4,
                 trans_std: float = 0.1):
        super().__init__()
        self.spatial_scale = float(spatial_scale)
        self.output_dim = output_dim
        self.group_size = group_size
        self.pooled_size = pooled_size
        self.part_size = pooled_size if part_size is None else part_size
        self.sample_per_part = sample_per_part
        self.trans_std = float(trans_std)

    def forward(self, x: torch.Tensor, rois: torch.Tensor,
                offset: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Pools ``x`` over ``rois``, each bin shifted by ``offset`` (None = plain pooling).

        Args:
            x: ``(N, output_dim*G*G, H, W)`` feature map at ``spatial_scale`` of the image.
            rois: ``(R, 5)`` rows ``[batch_index, x1, y1, x2, y2]`` in input-image pixels.
            offset: ``(R, 2*C_off, part, part)`` normalised offsets or None.

        Returns:
            ``(R, output_dim, P, P)``.
        """
        return deform_psroi_pool(x, rois, offset, self.spatial_scale, self.output_dim,
                                 self.group_size, self.pooled_size, self.part_size,
                                 self.sample_per_part, self.trans_std)

    def extra_repr(self) -> str:
        return (f"spatial_scale={self.spatial_scale}, output_dim={self.output_dim}, "
                f"group_size={self.group_size}, pooled_size={self.pooled_size}, "
                f"part_size={self.part_size}, sample_per_part={self.sample_per_part}, "
                f"trans_std={self.trans_std}")
