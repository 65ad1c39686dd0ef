"""Deformable max pooling: the op, its fake kernel, autograd and autocast, and the module.

``deform_max_pool2d`` (semantics in docs/DESIGN.md section 4.4) validates its arguments and
calls ``torch.ops.dcn_det.deform_max_pool2d``, which returns the output and the winning tap of
each output (``argmax``, int64, -1 where every tap was skipped); the backward op reads the
argmax instead of searching again. The CPU kernel is native; CUDA tensors run the
``grid_sample`` composite of :mod:`dcn_det.ops.deform_max_pool_composite`, registered there.
``DeformMaxPool2d`` owns a zero-initialised offset conv, so it starts as ``nn.MaxPool2d``.
"""
import torch
from torch import nn

from dcn_det.ops import deform_max_pool_composite  # noqa: F401  (registers the CUDA kernels)
from dcn_det.ops._validate import (check_floating, check_offset_layout, check_same, check_tensor,
                                   pair)

_OP = "dcn_det::deform_max_pool2d"
_BWD = "dcn_det::_deform_max_pool2d_backward"


def _out_size(size, pad, dil, k, stride):
    return (size + 2 * pad - (dil * (k - 1) + 1)) // stride + 1


# ---------------------------------------------------------------------------------------------
# Fake kernels, autograd and autocast for torch.ops.dcn_det
# ---------------------------------------------------------------------------------------------


@torch.library.register_fake(_OP)
def _fake(input, offset, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h,
          dilation_w, offset_groups):
    torch._check(input.dim() == 4, lambda: f"input must be (N, C, H, W), got {input.shape}")
    torch._check(offset.dim() == 4,
                 lambda: f"offset must be (N, 2*G*kh*kw, H_out, W_out), got {offset.shape}")
    torch._check(offset_groups > 0, lambda: f"offset_groups must be positive, got {offset_groups}")
    torch._check(input.shape[1] % offset_groups == 0,
                 lambda: f"C={input.shape[1]} must be divisible by offset_groups={offset_groups}")
    h_out = _out_size(input.shape[2], pad_h, dilation_h, kernel_h, stride_h)
    w_out = _out_size(input.shape[3], pad_w, dilation_w, kernel_w, stride_w)
    need = (input.shape[0], 2 * offset_groups * kernel_h * kernel_w, h_out, w_out)
    for got, want in zip(offset.shape, need):
        torch._check(got == want, lambda: f"offset must be {need}, got {tuple(offset.shape)}")
    shape = (input.shape[0], input.shape[1], h_out, w_out)
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.int64)


@torch.library.register_fake(_BWD)
def _fake_backward(grad_output, input, offset, argmax, kernel_h, kernel_w, stride_h, stride_w,
                   pad_h, pad_w, dilation_h, dilation_w, offset_groups):
    torch._check(grad_output.shape == argmax.shape,
                 lambda: f"grad_output {grad_output.shape} and argmax {argmax.shape} differ")
    return torch.empty_like(input), torch.empty_like(offset)


def _setup_context(ctx, inputs, output):
    input, offset = inputs[:2]
    ctx.params = inputs[2:]
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(input, offset, output[1])


def _backward(ctx, grad_output, _grad_argmax):
    input, offset, argmax = ctx.saved_tensors
    grad_input, grad_offset = torch.ops.dcn_det._deform_max_pool2d_backward(
        grad_output, input, offset, argmax, *ctx.params)
    return (grad_input, grad_offset) + (None,) * len(ctx.params)


torch.library.register_autograd(_OP, _backward, setup_context=_setup_context)
# Autocast runs the op in float32: there is no reduced-precision kernel, and sample coordinates
# in half precision would be off by whole pixels on ordinary feature maps.
torch.library.register_autocast(_OP, "cpu", torch.float32)
torch.library.register_autocast(_OP, "cuda", torch.float32)


# ---------------------------------------------------------------------------------------------
# Functional API
# ---------------------------------------------------------------------------------------------


def _validate(input, offset, kernel_size, stride, padding, dilation, mixed_dtypes_ok):
    """Checks every argument; returns the offset groups. Raises ValueError naming it."""
    check_tensor(input, "input", 4, "(N, C, H, W)")
    check_tensor(offset, "offset", 4, "(N, 2*offset_groups*kh*kw, H_out, W_out)")
    check_floating(input, "input")
    check_floating(offset, "offset")
    for name, (a, b), low in (("kernel_size", kernel_size, 1), ("stride", stride, 1),
                              ("padding", padding, 0), ("dilation", dilation, 1)):
        if a < low or b < low:
            raise ValueError(f"{name} must be >= {low}, got ({a}, {b})")
    if mixed_dtypes_ok:
        if offset.device != input.device:
            raise ValueError(f"offset is on {offset.device} but input is on {input.device}; "
                             "all tensors must be on the same device")
    else:
        check_same(input, "input", [("offset", offset)])
    og, _, _ = check_offset_layout(tuple(input.shape), offset, kernel_size, stride, padding,
                                   dilation, channels="C")
    return og


def deform_max_pool2d(input: torch.Tensor, offset: torch.Tensor, kernel_size, stride=1,
                      padding=0, dilation=1) -> torch.Tensor:
    """Deformable max pooling: the max over ``kh*kw`` bilinear samples moved by ``offset``.

    Tap ``k = u*kw + v`` of output ``(i, j)`` samples ``(y, x) = (i*stride_h - pad_h + u*dil_h
    + dy, j*stride_w - pad_w + v*dil_w + dx)`` in input pixels. A tap with ``y <= -1``,
    ``y >= H``, ``x <= -1`` or ``x >= W`` is skipped; otherwise ``(y, x)`` is clamped into the
    image and sampled bilinearly. The output is the maximum of the taps not skipped (the first
    in tap order wins a tie), 0 where all are skipped. Zero offsets give ``F.max_pool2d``
    with the same kernel, stride, padding and dilation (DESIGN 4.4).

    Args:
        input: ``(N, C, H, W)``.
        offset: ``(N, 2*G*kh*kw, H_out, W_out)``; for offset group ``g`` and tap ``k``
            channels ``g*2*kh*kw + 2*k`` and ``+1`` hold ``(dy, dx)`` in input pixels (the
            layout of ``deform_conv2d``). ``G`` is inferred from the channel count; channel
            ``c`` uses group ``c // (C/G)``.
        kernel_size, stride, padding, dilation: int or ``(h, w)`` pair; ``H_out``, ``W_out``
            are those of ``max_pool2d`` without ``ceil_mode``.

    Returns:
        ``(N, C, H_out, W_out)`` in ``input``'s dtype (float32 under autocast; float16 and
        bfloat16 inputs are computed in float32). Differentiable in ``input`` and ``offset``:
        only the winning tap of each output gets gradient.
    """
    kernel_size, stride = pair(kernel_size, "kernel_size"), pair(stride, "stride")
    padding, dilation = pair(padding, "padding"), pair(dilation, "dilation")
    autocast = isinstance(input, torch.Tensor) and torch.is_autocast_enabled(input.device.type)
    og = _validate(input, offset, kernel_size, stride, padding, dilation, autocast)
    out_dtype = None
    if not autocast and input.dtype in (torch.float16, torch.bfloat16):
        out_dtype = input.dtype
        input, offset = input.float(), offset.float()
    out, _ = torch.ops.dcn_det.deform_max_pool2d(input, offset, *kernel_size, *stride, *padding,
                                                 *dilation, og)
    return out.to(out_dtype) if out_dtype is not None else out


# ---------------------------------------------------------------------------------------------
# Module
# ---------------------------------------------------------------------------------------------


class DeformMaxPool2d(nn.Module):
    """Deformable max pooling whose offsets come from its own zero-initialised conv.

    The offset conv has the pool's kernel, stride, padding and dilation, so its output is
    ``H_out x W_out``; with its zero initialisation the module starts as ``nn.MaxPool2d``.

    Args:
        channels: ``C`` of the input (and output).
        kernel_size, stride, padding, dilation: int or ``(h, w)`` pair.
        offset_groups: ``G``; must divide ``channels``.
        offset_lr_mult: learning-rate multiplier of the offset conv, stored as its ``lr_mult``
            attribute for the optimizer builder.

    ``forward(x)``: ``x (N, C, H, W)`` -> ``(N, C, H_out, W_out)``.
    """

    def __init__(self, channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 offset_groups: int = 1, offset_lr_mult: float = 1.0):
        super().__init__()
        for name, v in (("channels", channels), ("offset_groups", offset_groups)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if channels % offset_groups:
            raise ValueError(f"channels={channels} must be divisible by "
                             f"offset_groups={offset_groups}")
        self.channels = channels
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = pair(padding, "padding")
        self.dilation = pair(dilation, "dilation")
        self.offset_groups = offset_groups
        kh, kw = self.kernel_size
        self.conv_offset = nn.Conv2d(channels, 2 * offset_groups * kh * kw, self.kernel_size,
                                     stride=self.stride, padding=self.padding,
                                     dilation=self.dilation, bias=True)
        # Read by the optimizer builder: offsets usually learn at a different rate.
        self.conv_offset.lr_mult = float(offset_lr_mult)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero offsets: the module starts as a plain max pool."""
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return deform_max_pool2d(x, self.conv_offset(x), self.kernel_size, stride=self.stride,
                                 padding=self.padding, dilation=self.dilation)

    def extra_repr(self) -> str:
        s = (f"{self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
             f"padding={self.padding}, dilation={self.dilation}, "
             f"offset_groups={self.offset_groups}")
        if self.conv_offset.lr_mult != 1.0:
            s += f", offset_lr_mult={self.conv_offset.lr_mult}"
        return s
