"""Slow pure-PyTorch oracles of the native ops, used by the tests and the benchmarks.

Each function transcribes the op's definition in ../shared/DESIGN.md section 4 with plain
tensor operations, so autograd through it is also the gradient oracle for the kernels.
"""
from typing import Optional

import torch


# ---------------------------------------------------------------------------------------------
# deform_psroi_pool (DESIGN 4.2, the official DeformablePSROIPooling operator)
# ---------------------------------------------------------------------------------------------
def _c_round(x: torch.Tensor) -> torch.Tensor:
    """C's ``round``: half away from zero (``torch.round`` rounds half to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def deform_psroi_pool_ref(input: torch.Tensor, rois: torch.Tensor, offset: Optional[torch.Tensor],
                          spatial_scale: float, output_dim: int, group_size: int,
                          pooled_size: int, part_size: Optional[int] = None,
                          sample_per_part: int = 4, trans_std: float = 0.0) -> torch.Tensor:
    """Deformable position-sensitive RoI pooling, vectorised over every sample at once.

    Differentiable by autograd with respect to ``input`` and ``offset`` (``rois`` are treated as
    constants). Memory grows as ``R * output_dim * P^2 * sample_per_part^2``.

    Args:
        input: ``(N, output_dim*group_size^2, H, W)`` feature map.
        rois: ``(R, 5)`` rows ``[batch_index, x1, y1, x2, y2]`` in input-image pixels.
        offset: ``None`` or ``(R, 2*C_off, part_size, part_size)``; channel ``2*k`` moves the
            bins of class ``k`` along x and ``2*k+1`` along y, in units of the RoI size divided
            by ``trans_std``.
        spatial_scale: feature-map pixels per image pixel (1/16 for stride 16).
        output_dim, group_size, pooled_size, part_size, sample_per_part, trans_std: DESIGN 4.2.

    Returns:
        ``(R, output_dim, pooled_size, pooled_size)``.
    """
    part = pooled_size if part_size is None else part_size
    N, C_in, H, W = input.shape
    R, P, G, S = rois.size(0), pooled_size, group_size, sample_per_part
    dev, dt = input.device, input.dtype
    rois = rois.detach().to(dt)
    col = lambda t: t.view(R, 1, 1, 1)  # noqa: E731  (per-RoI scalar against (R, C, P, P))

    x1 = _c_round(rois[:, 1]) * spatial_scale - 0.5
    y1 = _c_round(rois[:, 2]) * spatial_scale - 0.5
    x2 = (_c_round(rois[:, 3]) + 1) * spatial_scale - 0.5
    y2 = (_c_round(rois[:, 4]) + 1) * spatial_scale - 0.5
    roi_w = (x2 - x1).clamp_min(0.1)
    roi_h = (y2 - y1).clamp_min(0.1)
    bin_w, bin_h = roi_w / P, roi_h / P
    sub_w, sub_h = bin_w / S, bin_h / S

    p = torch.arange(P, device=dev)
    c = torch.arange(output_dim, device=dev)
    if offset is None:
        tx = input.new_zeros(R, output_dim, P, P)
        ty = tx
    else:
        per_class = output_dim // (offset.size(1) // 2)
        cls = c // per_class
        part_idx = p * part // P
        # offset[r, 2*cls[c], part_idx[ph], part_idx[pw]] -> (R, C, P, P)
        ox = offset[:, 2 * cls][:, :, part_idx][:, :, :, part_idx]
        oy = offset[:, 2 * cls + 1][:, :, part_idx][:, :, :, part_idx]
        tx, ty = ox * trans_std, oy * trans_std
    pf = p.to(dt)
    wstart = pf.view(1, 1, 1, P) * col(bin_w) + col(x1) + tx * col(roi_w)
    hstart = pf.view(1, 1, P, 1) * col(bin_h) + col(y1) + ty * col(roi_h)

    # Samples: (R, C, P, P, S_h, S_w).
    s = torch.arange(S, device=dev).to(dt)
    w = wstart[..., None, None] + s.view(1, S) * sub_w.view(R, 1, 1, 1, 1, 1)
    h = hstart[..., None, None] + s.view(S, 1) * sub_h.view(R, 1, 1, 1, 1, 1)
    valid = (w >= -0.5) & (w <= W - 0.5) & (h >= -0.5) & (h <= H - 0.5)
    w = w.clamp(0, W - 1)
    h = h.clamp(0, H - 1)
    # floor/ceil neighbours as the official kernel (on an integer both are the same pixel).
    x_lo, y_lo = torch.floor(w.detach()), torch.floor(h.detach())
    x_hi, y_hi = torch.ceil(w.detach()).long(), torch.ceil(h.detach()).long()
    dx, dy = w - x_lo, h - y_lo
    x_lo, y_lo = x_lo.long(), y_lo.long()

    g = (p * G // P).clamp_max(G - 1)
    channel = (c.view(-1, 1, 1) * G + g.view(1, -1, 1)) * G + g.view(1, 1, -1)  # (C, P, P)
    plane = (rois[:, 0].long().view(R, 1, 1, 1) * C_in + channel) * (H * W)  # (R, C, P, P)
    plane = plane[..., None, None]
    flat = input.reshape(-1)

    def at(yy, xx):
        return flat[(plane + yy * W + xx).clamp(0, max(flat.numel() - 1, 0))]

    val = ((1 - dx) * (1 - dy) * at(y_lo, x_lo) + (1 - dx) * dy * at(y_hi, x_lo)
           + dx * (1 - dy) * at(y_lo, x_hi) + dx * dy * at(y_hi, x_hi))
    val = torch.where(valid, val, torch.zeros_like(val))
    count = valid.sum(dim=(-1, -2)).to(dt)
    out = val.sum(dim=(-1, -2)) / count.clamp_min(1)
    return out
