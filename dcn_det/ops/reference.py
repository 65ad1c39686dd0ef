"""Slow, obviously correct pure-PyTorch versions of the ops, used as test oracles.

They follow ../../shared/DESIGN.md section 4 literally and are differentiable by autograd,
so the tests also use them to check the native backward kernels.
"""
from typing import Optional

import torch

from dcn_det.ops._validate import pair

# ---------------------------------------------------------------------------------------------
# deform_conv2d (DESIGN 4.1)
# ---------------------------------------------------------------------------------------------


def _bilinear_zero_outside(planes: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Samples ``planes`` at real pixel coordinates; corners outside the image count as zero.

    Args:
        planes: ``(N, G, C, H, W)``.
        y, x: ``(N, G, L)`` sample rows/columns in input pixels (pixel centres are integers).

    Returns:
        ``(N, G, C, L)`` values; ``grid_sample(align_corners=True, padding_mode="zeros")``.
    """
    n, g, c, h, w = planes.shape
    flat = planes.reshape(n, g, c, h * w)
    y0 = torch.floor(y)
    x0 = torch.floor(x)
    ly, lx = y - y0, x - x0
    out = 0
    for dy, dx, wgt in ((0, 0, (1 - ly) * (1 - lx)), (0, 1, (1 - ly) * lx),
                        (1, 0, ly * (1 - lx)), (1, 1, ly * lx)):
        yy = (y0 + dy).long()
        xx = (x0 + dx).long()
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        idx = torch.where(inside, yy * w + xx, torch.zeros_like(yy))
        vals = torch.gather(flat, 3, idx.unsqueeze(2).expand(n, g, c, idx.shape[-1]))
        out = out + vals * (wgt * inside).unsqueeze(2)
    return out


def deform_conv2d_ref(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                      bias: Optional[torch.Tensor] = None, stride=1, padding=0, dilation=1,
                      mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Deformable convolution, tap by tap, with explicit bilinear sampling.

    Same signature and shapes as :func:`dcn_det.ops.deform_conv2d`:
    input ``(N, C_in, H, W)``, offset ``(N, 2*G*kh*kw, H_out, W_out)`` as (dy, dx) pairs per
    tap, weight ``(C_out, C_in/groups, kh, kw)``, mask ``(N, G*kh*kw, H_out, W_out)``.

    Returns:
        ``(N, C_out, H_out, W_out)``.
    """
    sh, sw = pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    dh, dw = pair(dilation, "dilation")
    n, c_in, h, w = input.shape
    c_out, c_per_group, kh, kw = weight.shape
    groups = c_in // c_per_group
    n_taps = kh * kw
    og = offset.shape[1] // (2 * n_taps)
    h_out = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    w_out = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    dtype, device = input.dtype, input.device
    base_y = (torch.arange(h_out, dtype=dtype, device=device) * sh - ph).view(h_out, 1)
    base_x = (torch.arange(w_out, dtype=dtype, device=device) * sw - pw).view(1, w_out)
    planes = input.reshape(n, og, c_in // og, h, w)
    off = offset.reshape(n, og, n_taps, 2, h_out, w_out)
    columns = []  # per tap: (N, C_in, L)
    for k in range(n_taps):
        u, v = divmod(k, kw)
        y = (base_y + u * dh) + off[:, :, k, 0]  # (N, G, H_out, W_out)
        x = (base_x + v * dw) + off[:, :, k, 1]
        vals = _bilinear_zero_outside(planes, y.flatten(2), x.flatten(2))
        if mask is not None:
            m = mask.reshape(n, og, n_taps, h_out * w_out)[:, :, k]
            vals = vals * m.unsqueeze(2)
        columns.append(vals.reshape(n, c_in, h_out * w_out))
    # (N, groups, C_in/groups, K, L) -> contract with weight (groups, C_out/groups, C_in/groups, K)
    cols = torch.stack(columns, dim=2).reshape(n, groups, c_per_group, n_taps, h_out * w_out)
    wg = weight.reshape(groups, c_out // groups, c_per_group, n_taps)
    out = torch.einsum("gock,ngckl->ngol", wg, cols).reshape(n, c_out, h_out, w_out)
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1)
    return out
