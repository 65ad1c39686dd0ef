"""Slow, obviously correct pure-PyTorch oracles of the native ops, used by tests and benchmarks.

Each function transcribes the op's definition in docs/DESIGN.md section 4 with plain
tensor operations, favouring clarity over speed, so autograd through it is also the gradient
oracle for the kernels.
"""
import math
from typing import Optional

import torch

from dcn_det.ops._validate import pair


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

# RoIAlign and NMS (torchvision semantics, DESIGN.md 4.3)
# ---------------------------------------------------------------------------------------------

def _bilinear_ref(plane: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Samples ``plane (H, W, C)`` at points ``y, x (P,)`` -> ``(P, C)``, RoIAlign style.

    A point outside ``[-1, H] x [-1, W]`` gives 0; otherwise it is clamped to >= 0 and a point
    in the last row/column uses that row/column for both neighbours.
    """
    height, width = plane.shape[:2]
    inside = (y >= -1) & (y <= height) & (x >= -1) & (x <= width)
    y = y.clamp(min=0)
    x = x.clamp(min=0)
    y_low = y.floor().long()
    x_low = x.floor().long()
    y_edge = y_low >= height - 1
    x_edge = x_low >= width - 1
    y_low = torch.where(y_edge, height - 1, y_low)
    x_low = torch.where(x_edge, width - 1, x_low)
    y_high = torch.where(y_edge, y_low, y_low + 1)
    x_high = torch.where(x_edge, x_low, x_low + 1)
    y = torch.where(y_edge, y_low.to(y.dtype), y)
    x = torch.where(x_edge, x_low.to(x.dtype), x)
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    # Points outside are sent to pixel (0, 0) and weighted 0 after the gather.
    y_low, y_high = y_low.where(inside, 0), y_high.where(inside, 0)
    x_low, x_high = x_low.where(inside, 0), x_high.where(inside, 0)
    flat = plane.reshape(height * width, -1)

    def pixel(yi, xi):  # (P, C) rows of integer pixels; index_select has a fast backward
        return flat.index_select(0, yi * width + xi)

    hy, hx, ly, lx = hy[:, None], hx[:, None], ly[:, None], lx[:, None]
    value = (hy * hx * pixel(y_low, x_low) + hy * lx * pixel(y_low, x_high)
             + ly * hx * pixel(y_high, x_low) + ly * lx * pixel(y_high, x_high))
    return torch.where(inside[:, None], value, torch.zeros_like(value))


def roi_align_ref(input: torch.Tensor, rois: torch.Tensor, output_size, spatial_scale: float = 1.0,
                  sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """Reference RoIAlign. ``input (N, C, H, W)``, ``rois (R, 5)`` -> ``(R, C, PH, PW)``.

    One RoI at a time: lay out its sample grid, bilinearly sample, average each bin.
    """
    ph_n, pw_n = (output_size, output_size) if isinstance(output_size, int) else output_size
    channels = input.size(1)
    planes = input.permute(0, 2, 3, 1).contiguous()  # (N, H, W, C): gathers whole pixel rows
    outputs = []
    for roi in rois.detach().tolist():
        batch = int(roi[0])
        offset = 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (v * spatial_scale - offset for v in roi[1:])
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / ph_n, roi_w / pw_n
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / ph_n)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pw_n)
        if grid_h <= 0 or grid_w <= 0:
            outputs.append(input.new_zeros((channels, ph_n, pw_n)))
            continue
        # Sample (p, i) of an axis sits at start + p*bin + (i + 0.5)*bin/grid.
        iy = torch.arange(grid_h, dtype=input.dtype, device=input.device)
        ix = torch.arange(grid_w, dtype=input.dtype, device=input.device)
        py = torch.arange(ph_n, dtype=input.dtype, device=input.device)
        px = torch.arange(pw_n, dtype=input.dtype, device=input.device)
        ys = (y1 + py[:, None] * bin_h + (iy[None, :] + 0.5) * bin_h / grid_h).reshape(-1)
        xs = (x1 + px[:, None] * bin_w + (ix[None, :] + 0.5) * bin_w / grid_w).reshape(-1)
        yy = ys[:, None].expand(-1, xs.numel()).reshape(-1)
        xx = xs[None, :].expand(ys.numel(), -1).reshape(-1)
        values = _bilinear_ref(planes[batch], yy, xx).t()
        values = values.reshape(channels, ph_n, grid_h, pw_n, grid_w)
        outputs.append(values.sum(dim=(2, 4)) / (grid_h * grid_w))
    if not outputs:
        return input.new_zeros((0, channels, ph_n, pw_n))
    return torch.stack(outputs)


def pairwise_iou_ref(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every XYXY box in ``a (N, 4)`` with every one in ``b (M, 4)`` -> ``(N, M)``.

    Area is ``(x2-x1)*(y2-y1)``; two zero-area boxes give 0/0 = NaN.
    """
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    w = (torch.minimum(a[:, None, 2], b[None, :, 2])
         - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(min=0)
    h = (torch.minimum(a[:, None, 3], b[None, :, 3])
         - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp(min=0)
    inter = w * h
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def nms_ref(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Reference greedy NMS: ``boxes (N, 4)``, ``scores (N,)`` -> kept indices ``(K,)`` int64.

    Visits boxes by decreasing score (stable for ties); each box not yet suppressed is kept and
    suppresses every box whose IoU with it exceeds the threshold.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    suppressed = torch.zeros(boxes.size(0), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= pairwise_iou_ref(boxes[i:i + 1], boxes)[0] > iou_threshold
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)

# ------------------------------------------------------------------- end RoIAlign and NMS ----


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


# ---------------------------------------------------------------------------------------------
# deform_max_pool2d (DESIGN 4.4)
# ---------------------------------------------------------------------------------------------


def _clamped_bilinear(planes: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Samples ``planes`` at real pixel coordinates clamped into the image.

    Args:
        planes: ``(N, G, C, H, W)``.
        y, x: ``(N, G, L)`` sample rows/columns in input pixels (pixel centres are integers).

    Returns:
        ``(N, G, C, L)``: ``y`` clamped to ``[0, H-1]`` and ``x`` to ``[0, W-1]``, then bilinear
        with ``y0 = floor(y)``, ``y1 = min(y0 + 1, H - 1)`` (likewise for ``x``). Autograd gives
        the floor-based one-sided derivative at integers and 0 where a clamp is active.
    """
    n, g, c, h, w = planes.shape
    flat = planes.reshape(n, g, c, h * w)
    y = y.clamp(0, h - 1)
    x = x.clamp(0, w - 1)
    y0, x0 = torch.floor(y.detach()), torch.floor(x.detach())
    ly, lx = y - y0, x - x0
    y0, x0 = y0.long(), x0.long()
    y1, x1 = (y0 + 1).clamp(max=h - 1), (x0 + 1).clamp(max=w - 1)
    out = 0
    for yy, xx, wgt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x1, (1 - ly) * lx),
                        (y1, x0, ly * (1 - lx)), (y1, x1, ly * lx)):
        idx = (yy * w + xx).unsqueeze(2).expand(n, g, c, yy.shape[-1])
        out = out + torch.gather(flat, 3, idx) * wgt.unsqueeze(2)
    return out


def deform_max_pool2d_ref(input: torch.Tensor, offset: torch.Tensor, kernel_size, stride=1,
                          padding=0, dilation=1):
    """Deformable max pooling, tap by tap, with an explicit first-maximum scan.

    Same arguments as :func:`dcn_det.ops.deform_max_pool2d`: input ``(N, C, H, W)``, offset
    ``(N, 2*G*kh*kw, H_out, W_out)`` as (dy, dx) pairs per tap and offset group.

    Returns:
        ``(output (N, C, H_out, W_out), argmax (N, C, H_out, W_out) int64)``: the maximum over
        the taps that are not skipped (0 and -1 when all are), the first in tap order on a tie;
        a NaN value beats any number and the first NaN stays. Autograd through ``output`` sends
        the gradient through the winning tap only.
    """
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    dh, dw = pair(dilation, "dilation")
    n, c, h, w = input.shape
    n_taps = kh * kw
    og = offset.shape[1] // (2 * n_taps)
    h_out = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    w_out = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    dtype, device = input.dtype, input.device
    base_y = (torch.arange(h_out, dtype=dtype, device=device) * sh - ph).view(h_out, 1)
    base_x = (torch.arange(w_out, dtype=dtype, device=device) * sw - pw).view(1, w_out)
    planes = input.reshape(n, og, c // og, h, w)
    off = offset.reshape(n, og, n_taps, 2, h_out, w_out)
    best = input.new_zeros((n, og, c // og, h_out * w_out))
    arg = torch.full(best.shape, -1, dtype=torch.int64, device=device)
    for k in range(n_taps):
        u, v = divmod(k, kw)
        y = ((base_y + u * dh) + off[:, :, k, 0]).flatten(2)  # (N, G, L)
        x = ((base_x + v * dw) + off[:, :, k, 1]).flatten(2)
        kept = (y > -1) & (y < h) & (x > -1) & (x < w)  # NaN is not kept
        if h == 0 or w == 0:
            continue
        # Skipped points (NaN included) are moved to pixel 0 so the gather stays in bounds;
        # their values are never taken.
        val = _clamped_bilinear(planes, torch.where(kept, y, 0.0), torch.where(kept, x, 0.0))
        take = kept.unsqueeze(2) & ((arg < 0) | (val > best) | (torch.isnan(val) & ~torch.isnan(best)))
        best = torch.where(take, val, best)
        arg = torch.where(take, torch.full_like(arg, k), arg)
    return best.reshape(n, c, h_out, w_out), arg.reshape(n, c, h_out, w_out)
