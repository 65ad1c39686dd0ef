"""The bins of deformable (PS-)RoI pooling for given boxes, as rectangles (paper Figures 6-7).

The head's offset branch is re-run for the boxes asked about (e.g. the final detections,
not the proposals the head pooled at inference), on the feature the head sees:

* R-FCN (``RFCNHead.offsets``): ``f = relu(conv_new(feature))``; the ``cls_offset(f)`` maps
  are PS-RoI pooled without offsets into ``(R, 2*(K+1), part, part)``, one field per class
  (background last), of which the box's class is taken; ``bbox_offset`` gives one shared
  field.
* Faster R-CNN (``FastRCNNHead.offsets``): ``f`` is RoI pooled without offsets and
  ``offset_fc`` gives one shared field ``(R, 2, part, part)``.

Bin geometry is the operator's (``deform_psroi_pool``, DESIGN 4.2), in feature-map pixels
at ``spatial_scale = 1/s``: ``x1' = round(x1)/s - 0.5``, ``x2' = (round(x2) + 1)/s - 0.5`` (C
rounding, the official inclusive-pixel convention), ``roi_w = max(x2' - x1', 0.1)``,
``bin_w = roi_w / P``; bin ``(ph, pw)`` starts at ``x1' + pw*bin_w + tx*roi_w`` with
``tx = offset[2c, ph*part//P, pw*part//P] * trans_std`` (channel ``2c`` is x, ``2c+1`` y), and
likewise in y. Rectangles are returned in input-image pixels through the operator's own
frame, ``x = (x' + 0.5) * s``, in which the regular bins exactly tile the RoI as the operator
sees it, ``[round(x1), round(x2) + 1] x [round(y1), round(y2) + 1]``. (That frame puts feature
pixel ``j`` at image ``(j + 0.5) * s``, half a stride from the conv convention ``j * s`` of
:mod:`dcn_det.analysis.capture`: an offset the official operator has and this code keeps.)
"""
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from dcn_det.modeling.heads.multilevel_pool import MultiLevelRoIPool
from dcn_det.ops import DeformPSRoIPool


def _c_round(x: torch.Tensor) -> torch.Tensor:
    """C's ``round`` (half away from zero), as the operator rounds RoI corners."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def deformable_pool_of(box_head: nn.Module, branch: str = "cls") -> Optional[DeformPSRoIPool]:
    """The pooling module whose bins a head's learned offsets move, or None without them.

    Args:
        box_head: an ``RFCNHead`` or ``FastRCNNHead``.
        branch: R-FCN only: ``"cls"`` (per-class score offsets) or ``"bbox"`` (box offsets).
    """
    if branch not in ("cls", "bbox"):
        raise ValueError(f"branch must be 'cls' or 'bbox', got {branch!r}")
    if getattr(box_head, "deformable", False):  # R-FCN with deformable PS-RoI pooling
        return getattr(box_head, f"pool_{branch}")
    if getattr(box_head, "pooler", None) == "deformable":  # Faster R-CNN (C4 or FPN)
        return box_head.pool
    return None


def pool_offsets(box_head: nn.Module, feature: torch.Tensor, rois: torch.Tensor, *,
                 branch: str = "cls") -> torch.Tensor:
    """Re-runs a head's pooling-offset branch for ``rois``.

    Args:
        box_head: an ``RFCNHead`` / ``FastRCNNHead`` with deformable pooling.
        feature: ``(N, C, H, W)`` the backbone feature the head reads (its ``in_feature``).
        rois: ``(R, 5)`` ``[batch_index, x1, y1, x2, y2]`` in input-image pixels.
        branch: see :func:`deformable_pool_of`.

    Returns:
        ``(R, 2*C_off, part, part)`` normalised offsets (channel ``2c`` x, ``2c+1`` y).

    Raises:
        ValueError: the head has no deformable pooling.
    """
    if isinstance(getattr(box_head, "pool", None), MultiLevelRoIPool):
        raise ValueError("the FPN head's offsets depend on each RoI's level: use "
                         "deformable_pool_bins, or MultiLevelRoIPool.offsets per level")
    if deformable_pool_of(box_head, branch) is None:
        raise ValueError(f"{type(box_head).__name__} has no deformable RoI pooling (R-FCN: "
                         "model.head.deformable=false; Faster R-CNN: model.head.pooler is not "
                         "'deformable'), so it has no bins to draw")
    rois = rois.to(feature)
    # The same hidden conv the head's forward applies before pooling.
    f = torch.relu(box_head.conv_new(feature))
    offsets = box_head.offsets(f, rois)
    if isinstance(offsets, tuple):  # R-FCN: (cls, bbox)
        return offsets[0] if branch == "cls" else offsets[1]
    return offsets


@dataclass
class PoolBins:
    """Regular and offset bins of RoIs, in input-image pixels (see the module docstring).

    Attributes:
        boxes: ``(R, 4)`` the boxes asked about, XYXY input-image pixels.
        regular: ``(R, P, P, 4)`` XYXY rectangles of bin ``(ph, pw)`` without offsets.
        shifted: ``(R, P, P, 4)`` the same bins moved by the learned offsets.
        shift: ``(R, P, P, 2)`` ``(dx, dy)`` of each bin in input-image pixels
            (``offset * trans_std * roi size``).
    """

    boxes: torch.Tensor
    regular: torch.Tensor
    shifted: torch.Tensor
    shift: torch.Tensor

    def scaled(self, sx: float, sy: float) -> "PoolBins":
        """The same rectangles with x scaled by ``sx`` and y by ``sy`` (e.g. to the original
        image)."""
        s4 = torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
        s2 = torch.tensor([sx, sy], dtype=torch.float32)
        return PoolBins(self.boxes * s4, self.regular * s4, self.shifted * s4, self.shift * s2)


def pool_bin_rects(boxes: torch.Tensor, offset: Optional[torch.Tensor], *, spatial_scale: float,
                   pooled_size: int, part_size: Optional[int] = None,
                   trans_std: float = 0.1) -> PoolBins:
    """Bin rectangles of the operator for ``boxes`` moved by one offset field per box.

    Args:
        boxes: ``(R, 4)`` XYXY input-image pixels.
        offset: ``(R, 2, part, part)`` normalised offsets (channel 0 x, 1 y) of the field that
            moves these bins, or None (regular bins only: ``shifted == regular``).
        spatial_scale: ``1/s`` of the pooled feature map.
        pooled_size: ``P``.
        part_size: offset grid side (default ``P``).
        trans_std: offset scale.

    Returns:
        A :class:`PoolBins`.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    part = pooled_size if part_size is None else part_size
    r, p = boxes.shape[0], pooled_size
    if offset is not None and tuple(offset.shape) != (r, 2, part, part):
        raise ValueError(f"offset must have shape (R, 2, part, part) = {(r, 2, part, part)}, got "
                         f"{tuple(offset.shape)}")
    s = float(spatial_scale)
    x1 = _c_round(boxes[:, 0]) * s - 0.5
    y1 = _c_round(boxes[:, 1]) * s - 0.5
    x2 = (_c_round(boxes[:, 2]) + 1) * s - 0.5
    y2 = (_c_round(boxes[:, 3]) + 1) * s - 0.5
    roi_w = (x2 - x1).clamp(min=0.1).view(r, 1, 1)
    roi_h = (y2 - y1).clamp(min=0.1).view(r, 1, 1)
    bin_w, bin_h = roi_w / p, roi_h / p
    idx = torch.arange(p, dtype=torch.float32)
    wstart = x1.view(r, 1, 1) + idx.view(1, 1, p) * bin_w  # (R, P(ph), P(pw)) after broadcast
    hstart = y1.view(r, 1, 1) + idx.view(1, p, 1) * bin_h
    wstart, hstart = torch.broadcast_tensors(wstart, hstart)
    if offset is None:
        tx = ty = torch.zeros(r, p, p)
    else:
        part_idx = torch.arange(p) * part // p
        off = offset.float()[:, :, part_idx][:, :, :, part_idx]  # (R, 2, P, P)
        tx, ty = off[:, 0] * trans_std, off[:, 1] * trans_std
    dx, dy = tx * roi_w, ty * roi_h  # feature pixels

    def to_image(x0, y0):
        return torch.stack(((x0 + 0.5) / s, (y0 + 0.5) / s, (x0 + bin_w + 0.5) / s,
                            (y0 + bin_h + 0.5) / s), -1)

    return PoolBins(boxes=boxes, regular=to_image(wstart, hstart),
                    shifted=to_image(wstart + dx, hstart + dy),
                    shift=torch.stack((dx / s, dy / s), -1))


def deformable_pool_bins(box_head: nn.Module, feature: torch.Tensor, boxes: torch.Tensor,
                         labels: Optional[torch.Tensor] = None, *, batch_index: int = 0,
                         branch: str = "cls") -> PoolBins:
    """Regular and learned-offset bins of a head's deformable pooling for given boxes.

    Args:
        box_head: ``RFCNHead`` or ``FastRCNNHead`` with deformable pooling.
        feature: ``(N, C, H, W)`` the feature the head reads, of the padded batch.
        boxes: ``(R, 4)`` XYXY input-image pixels (e.g. the final detections).
        labels: ``(R,)`` class of each box in ``0..K-1``: picks its field from R-FCN's
            per-class score offsets; ignored for a shared field (Faster R-CNN, ``"bbox"``).
        batch_index: image of the batch the boxes belong to.
        branch: R-FCN's ``"cls"`` or ``"bbox"`` pooling.

    Returns:
        A :class:`PoolBins` in input-image pixels.

    Raises:
        ValueError: no deformable pooling, or R-FCN ``"cls"`` without ``labels``.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    rois = torch.cat((torch.full((boxes.shape[0], 1), float(batch_index)), boxes), 1)
    if isinstance(getattr(box_head, "pool", None), MultiLevelRoIPool):
        return _fpn_pool_bins(box_head.pool, feature, rois)
    with torch.no_grad():
        offsets = pool_offsets(box_head, feature, rois.to(feature.device),
                               branch=branch).float().cpu()
    pool = deformable_pool_of(box_head, branch)
    c_off = offsets.shape[1] // 2
    if c_off == 1:
        field = offsets
    else:
        if labels is None:
            raise ValueError("labels are required to pick each box's class offsets from the "
                             f"per-class field ({c_off} classes)")
        labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1).cpu()
        if labels.shape[0] != boxes.shape[0] or (labels.numel() and (
                labels.min() < 0 or labels.max() >= c_off)):
            raise ValueError(f"labels must hold one class in 0..{c_off - 1} per box "
                             f"({boxes.shape[0]} boxes), got {labels.tolist()}")
        idx = torch.stack((2 * labels, 2 * labels + 1), 1)  # (R, 2) channels x, y
        field = offsets[torch.arange(boxes.shape[0])[:, None], idx]
    return pool_bin_rects(boxes, field, spatial_scale=pool.spatial_scale,
                          pooled_size=pool.pooled_size, part_size=pool.part_size,
                          trans_std=pool.trans_std)


def _fpn_pool_bins(pool: MultiLevelRoIPool, features, rois: torch.Tensor) -> PoolBins:
    """The bins of the FPN head's deformable pooling: each box on its own level (the level's
    stride and offset fc), put back in the boxes' order."""
    if pool.pooler != "deformable":
        raise ValueError(f"the FPN head pools with {pool.pooler!r}, not deformable RoI pooling "
                         "(model.head.pooler: deformable): there are no pooling offsets")
    if isinstance(features, torch.Tensor) or len(features) != len(pool.strides):
        raise ValueError(f"the FPN head needs its {len(pool.strides)} pyramid levels P2-P5 as "
                         "feature (the list the head read)")
    p = pool.pooled_size
    r = rois.shape[0]
    out = PoolBins(boxes=rois[:, 1:].clone(), regular=torch.zeros(r, p, p, 4),
                   shifted=torch.zeros(r, p, p, 4), shift=torch.zeros(r, p, p, 2))
    levels = pool.levels(rois)
    for level, feature in enumerate(features):
        idx = torch.nonzero(levels == level).flatten()
        if idx.numel() == 0:
            continue
        level_rois = rois[idx].to(device=feature.device, dtype=torch.float32)
        with torch.no_grad():
            offsets = pool.offsets(level, feature, level_rois).float().cpu()
        op = pool.pools[level]
        bins = pool_bin_rects(rois[idx, 1:], offsets, spatial_scale=op.spatial_scale,
                              pooled_size=op.pooled_size, part_size=op.part_size,
                              trans_std=op.trans_std)
        out.regular[idx], out.shifted[idx], out.shift[idx] = bins.regular, bins.shifted, bins.shift
    return out
