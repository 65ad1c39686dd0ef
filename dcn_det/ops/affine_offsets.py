"""Affine-constrained offsets: 6 numbers per location and offset group -> per-tap offsets.

An affine deformable conv predicts, per output location and offset group ``g``, the matrix
``M = A - I`` and the translation ``t`` of an affine map of the kernel grid, in input-map
pixels, in ``(y, x)`` order. Its ``6*G`` channels are group-major, six per group:

    channel 6*g + 0: m_yy = a11 - 1      channel 6*g + 3: m_xx = a22 - 1
    channel 6*g + 1: m_yx = a12          channel 6*g + 4: t_y
    channel 6*g + 2: m_xy = a21          channel 6*g + 5: t_x

where ``A = [[a11, a12], [a21, a22]]`` acts on ``(y, x)`` column vectors. Tap ``k = u*kw + v``
sits at ``p_k = ((u - (kh-1)/2) * dil_h, (v - (kw-1)/2) * dil_w)`` relative to the kernel
centre and samples at ``centre + A p_k + t``, so its offset (DESIGN 4.1) is

    dy_k = m_yy * p_k.y + m_yx * p_k.x + t_y
    dx_k = m_xy * p_k.y + m_xx * p_k.x + t_x

This is linear in the 6 numbers with coefficients fixed by the kernel size and dilation, so it
is one constant matrix (``affine_offset_basis``) applied as a 1x1 convolution: the deformable
conv op and its export paths see an ordinary offset tensor.
"""
from typing import Tuple

import torch
import torch.nn.functional as F

# The offset parametrisations of DeformConv2d / ModulatedDeformConv2d.
OFFSET_MODES = ("free", "affine")
# Affine parameters per offset group: m_yy, m_yx, m_xy, m_xx, t_y, t_x.
AFFINE_PARAMS = 6


def affine_offset_basis(kernel_size: Tuple[int, int], dilation: Tuple[int, int],
                        offset_groups: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The constant matrix mapping affine parameters to per-tap offsets.

    Args:
        kernel_size: ``(kh, kw)``.
        dilation: ``(dil_h, dil_w)`` of the deformable conv (the grid's spacing).
        offset_groups: ``G``.
        dtype: dtype of the result.

    Returns:
        ``E (2*G*kh*kw, 6*G)``: ``offset[c] = sum_j E[c, j] * params[j]``, with ``params`` in
        the channel order of the module docstring and ``offset`` in ``deform_conv2d``'s layout
        (channel ``g*2*kh*kw + 2*k`` is ``dy`` of tap ``k``, ``+1`` its ``dx``). Block-diagonal
        over the offset groups.
    """
    (kh, kw), (dh, dw) = kernel_size, dilation
    taps = kh * kw
    basis = torch.zeros(2 * offset_groups * taps, AFFINE_PARAMS * offset_groups, dtype=dtype)
    for g in range(offset_groups):
        for k in range(taps):
            u, v = divmod(k, kw)
            py, px = (u - (kh - 1) / 2) * dh, (v - (kw - 1) / 2) * dw
            row, col = g * 2 * taps + 2 * k, AFFINE_PARAMS * g
            basis[row, col:col + 2] = torch.tensor([py, px], dtype=dtype)  # dy: m_yy, m_yx
            basis[row, col + 4] = 1.0  # t_y
            basis[row + 1, col + 2:col + 4] = torch.tensor([py, px], dtype=dtype)  # dx
            basis[row + 1, col + 5] = 1.0  # t_x
    return basis


def expand_affine_offsets(params: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Per-tap offsets from affine parameters.

    Args:
        params: ``(N, 6*G, H_out, W_out)`` in the channel order of the module docstring.
        basis: ``(2*G*kh*kw, 6*G)`` from :func:`affine_offset_basis`.

    Returns:
        ``(N, 2*G*kh*kw, H_out, W_out)`` offsets in ``deform_conv2d``'s layout, input pixels.
    """
    # A 1x1 convolution with a constant weight: traced, compiled and exported like any conv.
    return F.conv2d(params, basis.to(params.dtype)[:, :, None, None])
