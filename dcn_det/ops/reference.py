"""Slow, obviously correct pure-PyTorch versions of the ops, used as oracles by the tests.

Each follows the semantics in ../shared/DESIGN.md section 4 line by line, favouring clarity over
speed. They are differentiable by autograd wherever the op has a gradient.
"""
import math

import torch


# ---------------------------------------------------------------------------------------------
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
