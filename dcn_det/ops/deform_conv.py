"""Deformable convolution (DCNv1) and modulated deformable convolution (DCNv2).

``deform_conv2d`` has torchvision's signature and semantics (DESIGN 4.1); it validates its
arguments and calls ``torch.ops.dcn_det.deform_conv2d``. This file also registers the op's
fake kernels (for torch.compile / torch.export), its autograd formula and its autocast rule,
and defines the ``DeformConv2d`` / ``ModulatedDeformConv2d`` modules, whose offsets are free
per tap or affine-constrained (``dcn_det.ops.affine_offsets``).
"""
import math
from typing import Optional

import torch
from torch import nn

from dcn_det.ops._validate import (check_floating, check_offset_layout, check_same, check_tensor,
                                   pair)
from dcn_det.ops.affine_offsets import (AFFINE_PARAMS, OFFSET_MODES, affine_offset_basis,
                                        expand_affine_offsets)

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _out_size(size, pad, dil, k, stride):
    return (size + 2 * pad - (dil * (k - 1) + 1)) // stride + 1


# ---------------------------------------------------------------------------------------------
# Fake kernels, autograd and autocast for torch.ops.dcn_det
# ---------------------------------------------------------------------------------------------


@torch.library.register_fake("dcn_det::deform_conv2d")
def _deform_conv2d_fake(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                        dilation_h, dilation_w, groups, offset_groups):
    kh, kw = weight.shape[2], weight.shape[3]
    h_out = _out_size(input.shape[2], pad_h, dilation_h, kh, stride_h)
    w_out = _out_size(input.shape[3], pad_w, dilation_w, kw, stride_w)
    return input.new_empty((input.shape[0], weight.shape[0], h_out, w_out))


@torch.library.register_fake("dcn_det::_deform_conv2d_backward")
def _deform_conv2d_backward_fake(grad_output, input, weight, offset, mask, bias, stride_h,
                                 stride_w, pad_h, pad_w, dilation_h, dilation_w, groups,
                                 offset_groups):
    grad_mask = torch.empty_like(mask) if mask is not None else input.new_empty((0,))
    grad_bias = torch.empty_like(bias) if bias is not None else input.new_empty((0,))
    return (torch.empty_like(input), torch.empty_like(weight), torch.empty_like(offset),
            grad_mask, grad_bias)


def _setup_context(ctx, inputs, output):
    input, weight, offset, mask, bias = inputs[:5]
    ctx.params = inputs[5:]
    ctx.has_mask = mask is not None
    ctx.has_bias = bias is not None
    ctx.save_for_backward(input, weight, offset, mask, bias)


def _backward(ctx, grad_output):
    input, weight, offset, mask, bias = ctx.saved_tensors
    gi, gw, goff, gm, gb = torch.ops.dcn_det._deform_conv2d_backward(
        grad_output, input, weight, offset, mask, bias, *ctx.params)
    return (gi, gw, goff, gm if ctx.has_mask else None, gb if ctx.has_bias else None,
            *([None] * len(ctx.params)))


torch.library.register_autograd("dcn_det::deform_conv2d", _backward, setup_context=_setup_context)
# Autocast runs the op in float32 (there is no reduced-precision kernel on the CPU, and the
# offset gradient is a sum of products of differences that half precision would wreck).
torch.library.register_autocast("dcn_det::deform_conv2d", "cpu", torch.float32)
torch.library.register_autocast("dcn_det::deform_conv2d", "cuda", torch.float32)


# ---------------------------------------------------------------------------------------------
# Functional API
# ---------------------------------------------------------------------------------------------


def _validate(input, offset, weight, bias, mask, stride, padding, dilation):
    """Checks every argument; returns (groups, offset_groups). Raises ValueError naming it."""
    check_tensor(input, "input", 4, "(N, C_in, H, W)")
    check_tensor(weight, "weight", 4, "(C_out, C_in/groups, kh, kw)")
    check_tensor(offset, "offset", 4, "(N, 2*offset_groups*kh*kw, H_out, W_out)")
    if mask is not None:
        check_tensor(mask, "mask", 4, "(N, offset_groups*kh*kw, H_out, W_out)")
    if bias is not None:
        check_tensor(bias, "bias", 1, "(C_out,)")
    for name, t in (("input", input), ("weight", weight), ("offset", offset), ("mask", mask),
                    ("bias", bias)):
        if t is not None:
            check_floating(t, name)
    for name, (a, b), low in (("stride", stride, 1), ("padding", padding, 0),
                              ("dilation", dilation, 1)):
        if a < low or b < low:
            raise ValueError(f"{name} must be >= {low}, got ({a}, {b})")
    n, c_in, h, w = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    if c_per_group == 0 or c_in % c_per_group != 0:
        raise ValueError(
            f"input has C_in={c_in} channels, which must be a positive multiple of "
            f"weight.size(1)={c_per_group} (weight shape {tuple(weight.shape)}, "
            f"input shape {tuple(input.shape)})")
    groups = c_in // c_per_group
    if c_out % groups != 0:
        raise ValueError(f"weight.size(0)={c_out} (C_out) must be divisible by groups={groups} "
                         f"(= C_in {c_in} / weight.size(1) {c_per_group})")
    if kh == 0 or kw == 0:
        raise ValueError(f"weight must have a non-empty kernel, got shape {tuple(weight.shape)}")
    taps = kh * kw
    og, h_out, w_out = check_offset_layout(tuple(input.shape), offset, (kh, kw), stride,
                                           padding, dilation)
    if mask is not None and tuple(mask.shape) != (n, og * taps, h_out, w_out):
        raise ValueError(
            f"mask must have shape {(n, og * taps, h_out, w_out)} (N, offset_groups*kh*kw, H_out, "
            f"W_out) with offset_groups={og} from offset, got {tuple(mask.shape)}")
    if bias is not None and bias.shape[0] != c_out:
        raise ValueError(f"bias must have shape ({c_out},) (C_out,), got {tuple(bias.shape)}")
    return groups, og


def _needs_float32(dtype: torch.dtype, device: torch.device) -> bool:
    """True where no kernel exists for ``dtype``: half/bfloat16 on the CPU, bfloat16 anywhere."""
    if dtype == torch.bfloat16:
        return True
    return dtype == torch.float16 and device.type != "cuda"


def deform_conv2d(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                  bias: Optional[torch.Tensor] = None, stride=1, padding=0, dilation=1,
                  mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Deformable convolution v1 (``mask=None``) or modulated v2 (with ``mask``).

    Same signature and semantics as ``torchvision.ops.deform_conv2d`` (DESIGN 4.1).

    Args:
        input: ``(N, C_in, H, W)``.
        offset: ``(N, 2*G*kh*kw, H_out, W_out)``; for offset group ``g`` and tap
            ``k = u*kw + v`` channels ``g*2*kh*kw + 2*k`` and ``+1`` hold ``(dy, dx)`` in
            input pixels. ``G`` (offset groups) is inferred from the channel count.
        weight: ``(C_out, C_in/groups, kh, kw)``; ``groups`` is inferred from ``C_in``.
        bias: ``(C_out,)`` or None.
        stride, padding, dilation: int or ``(h, w)`` pair.
        mask: ``(N, G*kh*kw, H_out, W_out)`` modulation scalars, or None.

    Returns:
        ``(N, C_out, H_out, W_out)`` in ``input``'s dtype (float32 under autocast).
    """
    stride, padding, dilation = (pair(stride, "stride"), pair(padding, "padding"),
                                 pair(dilation, "dilation"))
    groups, og = _validate(input, offset, weight, bias, mask, stride, padding, dilation)
    tensors = [input, weight, offset, mask, bias]
    others = [("weight", weight), ("offset", offset), ("mask", mask), ("bias", bias)]
    out_dtype = None
    if torch.is_autocast_enabled(input.device.type):
        # Mixed dtypes are expected here (the registered autocast rule casts all to float32),
        # so only the devices must agree.
        for name, t in others:
            if t is not None and t.device != input.device:
                raise ValueError(f"{name} is on {t.device} but input is on {input.device}; "
                                 "all tensors must be on the same device")
    else:
        check_same(input, "input", others)
        if _needs_float32(input.dtype, input.device):
            out_dtype = input.dtype
            tensors = [t.float() if t is not None else None for t in tensors]
    out = torch.ops.dcn_det.deform_conv2d(*tensors, stride[0], stride[1], padding[0],
                                          padding[1], dilation[0], dilation[1], groups, og)
    return out.to(out_dtype) if out_dtype is not None else out


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------


class _DeformConvBase(nn.Module):
    """Shared parameters, initialisation and offset branch of the two deformable conv modules.

    ``conv_offset`` (same kernel, stride, padding and dilation as the main conv, so its output
    is ``H_out x W_out``) predicts the offsets: ``2*G*kh*kw`` free per-tap ``(dy, dx)`` channels
    (``offset_mode="free"``) or ``6*G`` affine parameters per location (``"affine"``, see
    ``dcn_det.ops.affine_offsets`` for the channel order), followed by ``G*kh*kw`` mask logits
    in the modulated variant. :meth:`offset_and_mask` turns that output into the
    ``(offset, mask)`` the op receives.
    """

    _HAS_MASK = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, offset_groups: int = 1, bias: bool = True,
                 offset_lr_mult: float = 1.0, offset_mode: str = "free"):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("groups", groups), ("offset_groups", offset_groups)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels={in_channels} and out_channels={out_channels} must be "
                             f"divisible by groups={groups}")
        if in_channels % offset_groups:
            raise ValueError(f"in_channels={in_channels} must be divisible by "
                             f"offset_groups={offset_groups}")
        if offset_mode not in OFFSET_MODES:
            raise ValueError(f"offset_mode must be one of {OFFSET_MODES}, got "
                             f"offset_mode={offset_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = pair(padding, "padding")
        self.dilation = pair(dilation, "dilation")
        self.groups = groups
        self.offset_groups = offset_groups
        self.offset_mode = offset_mode
        kh, kw = self.kernel_size
        taps = offset_groups * kh * kw
        # Channels of conv_offset's output that describe offsets (the rest are mask logits).
        self.offset_param_channels = (AFFINE_PARAMS * offset_groups if offset_mode == "affine"
                                      else 2 * taps)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.conv_offset = nn.Conv2d(in_channels,
                                     self.offset_param_channels + (taps if self._HAS_MASK else 0),
                                     self.kernel_size, stride=self.stride, padding=self.padding,
                                     dilation=self.dilation, bias=True)
        # Read by the optimizer builder: offsets usually learn at a different rate.
        self.conv_offset.lr_mult = offset_lr_mult
        # Fixed by the geometry, not learned, so it stays out of the state dict.
        self.register_buffer(
            "affine_basis",
            affine_offset_basis(self.kernel_size, self.dilation, offset_groups)
            if offset_mode == "affine" else None, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv2d's initialisation for the main conv; zeros for the offset conv."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        # Zero offsets (free: every tap; affine: A = I, t = 0) and mask logits 0 -> 0.5 make
        # the module start as a plain conv.
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def offset_and_mask(self, branch: torch.Tensor):
        """What the op receives, from the output of ``conv_offset``.

        Args:
            branch: ``conv_offset``'s output ``(N, offset_param_channels [+ G*kh*kw],
                H_out, W_out)``.

        Returns:
            ``(offset, mask)``: ``offset (N, 2*G*kh*kw, H_out, W_out)`` per-tap ``(dy, dx)``
            in input pixels (affine parameters expanded); ``mask (N, G*kh*kw, H_out, W_out)``
            = sigmoid of the logits for the modulated variant, else None.
        """
        offset = branch[:, :self.offset_param_channels] if self._HAS_MASK else branch
        if self.affine_basis is not None:
            offset = expand_affine_offsets(offset, self.affine_basis)
        mask = torch.sigmoid(branch[:, self.offset_param_channels:]) if self._HAS_MASK else None
        return offset, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offset_and_mask(self.conv_offset(x))
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, mask=mask)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}")
        if self.groups != 1:
            s += f", groups={self.groups}"
        s += f", offset_groups={self.offset_groups}"
        if self.offset_mode != "free":
            s += f", offset_mode={self.offset_mode!r}"
        if self.bias is None:
            s += ", bias=False"
        if self.conv_offset.lr_mult != 1.0:
            s += f", offset_lr_mult={self.conv_offset.lr_mult}"
        return s


class DeformConv2d(_DeformConvBase):
    """Deformable convolution v1 whose offsets come from its own (zero-initialised) conv.

    ``offset_mode="free"``: ``conv_offset`` outputs ``2*G*kh*kw`` channels, the op's offsets.
    ``offset_mode="affine"``: it outputs ``6*G`` affine parameters (``A - I`` and ``t`` per
    offset group, DESIGN 4.1), expanded to per-tap offsets by a constant linear map.
    ``forward(x)``: ``x (N, C_in, H, W)`` -> ``(N, C_out, H_out, W_out)``.
    """


class ModulatedDeformConv2d(_DeformConvBase):
    """Modulated deformable convolution (DCNv2): offsets and mask from one zero-initialised conv.

    ``conv_offset`` outputs the offset channels (``2*G*kh*kw`` free or ``6*G`` affine, as in
    ``DeformConv2d``), then ``G*kh*kw`` mask logits; mask = sigmoid(logits), so 0.5 at
    initialisation. The mask is per tap in both offset modes.
    ``forward(x)``: ``x (N, C_in, H, W)`` -> ``(N, C_out, H_out, W_out)``.
    """

    _HAS_MASK = True
