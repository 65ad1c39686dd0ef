"""``deform_max_pool2d`` as a composite of ``grid_sample`` and max: the CUDA kernels.

There is no hand-written CUDA kernel for deformable max pooling; importing this file registers
:func:`forward` and :func:`backward` (plain tensor code, any device) for the CUDA dispatch key
of ``dcn_det::deform_max_pool2d`` and ``dcn_det::_deform_max_pool2d_backward``. They follow
DESIGN 4.4 and the CPU kernel, including the argmax output (-1 where every tap is skipped),
the first-maximum rule and the gradients at integer positions, up to float rounding.

The clamped bilinear sample is ``grid_sample(align_corners=True)`` on the input padded, by
replicating its last row and column, to ``S = 2**m + 1 > H`` rows (likewise columns). Two
reasons:

* Exact coordinates. ``grid_sample`` maps a normalised coordinate ``g`` to pixel
  ``(g + 1) / 2 * (S - 1)``; with ``S - 1`` a power of two, ``g = y / 2**(m-1) - 1`` comes back
  as exactly ``y`` for every integer ``y`` (and within float rounding otherwise), so zero
  offsets reproduce ``max_pool2d`` and the floor-based derivative at integers is the CPU's.
* The last row. At ``y = H - 1`` bilinear sampling reads row ``H`` with weight 0; replicating
  row ``H - 1`` there makes the derivative by ``y`` 0, as for the clamped sample (a zero row
  would give ``-value``). The padded rows never receive input gradient (their weight is 0).
"""
from typing import Tuple

import torch
import torch.nn.functional as F


def _padded_side(size: int) -> int:
    """``2**m + 1`` with the smallest ``m >= 0`` such that ``2**m >= size`` (size >= 1)."""
    return (1 << (size - 1).bit_length()) + 1


def _sample_points(offset: torch.Tensor, kernel_w: int, stride: Tuple[int, int],
                   padding: Tuple[int, int], dilation: Tuple[int, int],
                   offset_groups: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sample rows and columns ``(N, G, K, H_out, W_out)`` in input pixels (DESIGN 4.4)."""
    n, _, h_out, w_out = offset.shape
    taps = offset.shape[1] // (2 * offset_groups)
    off = offset.reshape(n, offset_groups, taps, 2, h_out, w_out)
    k = torch.arange(taps, device=offset.device)
    u, v = (k // kernel_w).view(taps, 1, 1), (k % kernel_w).view(taps, 1, 1)
    i = torch.arange(h_out, device=offset.device).view(1, h_out, 1)
    j = torch.arange(w_out, device=offset.device).view(1, 1, w_out)
    # Integer grid first, then one rounding when the offset is added (as the CPU kernel does).
    base_y = (i * stride[0] - padding[0] + u * dilation[0]).to(offset.dtype)
    base_x = (j * stride[1] - padding[1] + v * dilation[1]).to(offset.dtype)
    return base_y + off[:, :, :, 0], base_x + off[:, :, :, 1]


def _kept(y: torch.Tensor, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """True for taps inside ``(-1, H) x (-1, W)``; NaN coordinates are skipped."""
    return (y > -1) & (y < height) & (x > -1) & (x < width)


def _grid(y: torch.Tensor, x: torch.Tensor, height: int, width: int, padded_h: int,
          padded_w: int) -> Tuple[torch.Tensor, float, float]:
    """``grid_sample`` coordinates ``(..., 2)`` (x, y) of the clamped points on the padded
    input, and the pixels per normalised unit ``(half_h, half_w)`` (powers of two)."""
    half_h, half_w = (padded_h - 1) / 2, (padded_w - 1) / 2
    gy = y.clamp(0, height - 1) / half_h - 1
    gx = x.clamp(0, width - 1) / half_w - 1
    return torch.stack([gx, gy], dim=-1), half_h, half_w


def _pad(input: torch.Tensor) -> torch.Tensor:
    """``input (N, C, H, W)`` -> ``(N, C, S_h, S_w)`` with the last row/column replicated."""
    h, w = input.shape[2:]
    return F.pad(input, (0, _padded_side(w) - w, 0, _padded_side(h) - h), mode="replicate")


def forward(input: torch.Tensor, offset: torch.Tensor, kernel_h: int, kernel_w: int,
            stride_h: int, stride_w: int, pad_h: int, pad_w: int, dilation_h: int,
            dilation_w: int, offset_groups: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The op's forward (schema of ``dcn_det::deform_max_pool2d``).

    Args:
        input: ``(N, C, H, W)`` float32/float64.
        offset: ``(N, 2*G*kh*kw, H_out, W_out)``, same dtype and device.
        kernel_h .. offset_groups: as in the schema (``G = offset_groups``).

    Returns:
        ``(output (N, C, H_out, W_out), argmax (N, C, H_out, W_out) int64)``.
    """
    n, c, h, w = input.shape
    h_out, w_out = offset.shape[2:]
    taps, cpg = kernel_h * kernel_w, c // offset_groups
    output = input.new_zeros((n, c, h_out, w_out))
    argmax = torch.full((n, c, h_out, w_out), -1, dtype=torch.int64, device=input.device)
    if output.numel() == 0 or h == 0 or w == 0:
        return output, argmax
    y, x = _sample_points(offset, kernel_w, (stride_h, stride_w), (pad_h, pad_w),
                          (dilation_h, dilation_w), offset_groups)
    kept = _kept(y, x, h, w)  # (N, G, K, H_out, W_out)
    padded = _pad(input)
    grid, _, _ = _grid(y, x, h, w, padded.shape[2], padded.shape[3])
    values = F.grid_sample(
        padded.reshape(n * offset_groups, cpg, *padded.shape[2:]),
        grid.reshape(n * offset_groups, taps * h_out, w_out, 2),
        mode="bilinear", padding_mode="zeros", align_corners=True,
    ).view(n, offset_groups, cpg, taps, h_out, w_out)
    kept6 = kept.unsqueeze(2)
    masked = torch.where(kept6, values, torch.full_like(values, float("-inf")))
    # argmax keeps the first maximum (a NaN beats any number, the first NaN stays); a skipped
    # tap can only win when every kept value is -inf, and then the first kept tap is the one.
    arg = masked.argmax(dim=3, keepdim=True)
    first_kept = kept6.expand_as(values).to(torch.uint8).argmax(dim=3, keepdim=True)
    arg = torch.where(kept6.expand_as(values).gather(3, arg), arg, first_kept)
    best = values.gather(3, arg).squeeze(3)
    arg = arg.squeeze(3)
    any_kept = kept.any(dim=2, keepdim=True)  # (N, G, 1, H_out, W_out)
    best = torch.where(any_kept, best, torch.zeros_like(best))
    arg = torch.where(any_kept, arg, torch.full_like(arg, -1))
    return best.reshape(n, c, h_out, w_out), arg.reshape(n, c, h_out, w_out)


def backward(grad_output: torch.Tensor, input: torch.Tensor, offset: torch.Tensor,
             argmax: torch.Tensor, kernel_h: int, kernel_w: int, stride_h: int, stride_w: int,
             pad_h: int, pad_w: int, dilation_h: int, dilation_w: int,
             offset_groups: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The op's backward (schema of ``dcn_det::_deform_max_pool2d_backward``).

    Each output's gradient goes through its winning tap (``argmax``) only: to the input by the
    bilinear weights (``grid_sampler_2d_backward`` on one plane per channel) and to that tap's
    ``(dy, dx)`` by the derivative of the sampled value, zero on an axis whose clamp is active.

    Returns:
        ``(grad_input (N, C, H, W), grad_offset (N, 2*G*kh*kw, H_out, W_out))``.
    """
    n, c, h, w = input.shape
    h_out, w_out = offset.shape[2:]
    taps, cpg = kernel_h * kernel_w, c // offset_groups
    grad_input = torch.zeros_like(input)
    grad_offset = torch.zeros_like(offset)
    if grad_output.numel() == 0 or h == 0 or w == 0:
        return grad_input, grad_offset
    y, x = _sample_points(offset, kernel_w, (stride_h, stride_w), (pad_h, pad_w),
                          (dilation_h, dilation_w), offset_groups)
    won = argmax >= 0
    k = argmax.clamp(min=0).view(n, offset_groups, cpg, 1, h_out, w_out)

    def winner(t):  # (N, G, K, H_out, W_out) -> the winning tap's value per channel
        return t.unsqueeze(2).expand(n, offset_groups, cpg, taps, h_out, w_out).gather(3, k)

    # Outputs without a winner read tap 0, which may be NaN or far outside: pixel 0 instead
    # (their gradient is 0, and 0 * NaN would reach the offsets).
    won_flat = won.reshape(n * c, h_out, w_out)
    y_win = torch.where(won_flat, winner(y).reshape(n * c, h_out, w_out), 0.0)
    x_win = torch.where(won_flat, winner(x).reshape(n * c, h_out, w_out), 0.0)
    padded = _pad(input)
    grid, half_h, half_w = _grid(y_win, x_win, h, w, padded.shape[2], padded.shape[3])
    grad = torch.where(won, grad_output, torch.zeros_like(grad_output))
    grad_padded, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
        grad.reshape(n * c, 1, h_out, w_out), padded.reshape(n * c, 1, *padded.shape[2:]), grid,
        0, 0, True, [True, True])  # bilinear, zeros, align_corners
    grad_input = grad_padded.view(n, c, *padded.shape[2:])[:, :, :h, :w].contiguous()
    # Pixels per normalised unit; the clamp's derivative is 1 on [0, H-1] (ends included).
    free_y = (y_win >= 0) & (y_win <= h - 1)
    free_x = (x_win >= 0) & (x_win <= w - 1)
    gy = torch.where(free_y, grad_grid[..., 1] / half_h, torch.zeros_like(y_win))
    gx = torch.where(free_x, grad_grid[..., 0] / half_w, torch.zeros_like(x_win))
    index = k.view(n, offset_groups, cpg, h_out, w_out)
    shape = (n, offset_groups, taps, h_out, w_out)
    g_dy = y.new_zeros(shape).scatter_add_(2, index, gy.view(index.shape))
    g_dx = x.new_zeros(shape).scatter_add_(2, index, gx.view(index.shape))
    grad_offset = torch.stack([g_dy, g_dx], dim=3).reshape(offset.shape)
    return grad_input, grad_offset


torch.library.impl("dcn_det::deform_max_pool2d", "CUDA", forward)
torch.library.impl("dcn_det::_deform_max_pool2d_backward", "CUDA", backward)
