"""RoI pooling over the FPN levels: each RoI is pooled from the one level its size selects.

Level rule (FPN paper eq. 1, detectron2's ``assign_boxes_to_levels``): a RoI of side
``s = sqrt(w * h)`` (input pixels) goes to level ``floor(4 + log2(s / 224 + 1e-8))`` clamped to
``[2, 5]``; the ``1e-8`` keeps a RoI of exactly 224 * 2^k px on level ``4 + k`` despite rounding.

Pooling per level: RoIAlign (7x7, adaptive sampling, ``aligned=True``; detectron2's
``ROIAlignV2``), plain RoI average pooling (``deform_psroi_pool`` with group_size 1 and no
offsets) or deformable RoI pooling as in the official Deformable FPN: pool without offsets,
a zero-initialised fc of that level (lr x ``offset_lr_mult``) predicts the ``(2, P, P)``
offsets, pool again with them. Each level has its own ``spatial_scale = 1 / stride``.

Export: the RoIs of a level are gathered with ``nonzero`` (a data-dependent count) and written
back with ``index_put``; nothing branches in Python on how many RoIs a level has, so empty
levels and images without RoIs need no special case, in eager mode and under ``torch.export``.
"""
from typing import List, Sequence

import torch
from torch import nn

from dcn_det.ops import DeformPSRoIPool, RoIAlign
from dcn_det.ops._validate import check_rois

from dcn_det.modeling.heads.common import zero_offset_layer

POOLERS = ("roi_align", "deformable", "psroi_plain")
CANONICAL_BOX_SIZE = 224
CANONICAL_LEVEL = 4


def assign_boxes_to_levels(rois: torch.Tensor, min_level: int = 2, max_level: int = 5,
                           canonical_box_size: float = CANONICAL_BOX_SIZE,
                           canonical_level: int = CANONICAL_LEVEL) -> torch.Tensor:
    """The pyramid level of each RoI, as an index from ``min_level``.

    Args:
        rois: ``(R, 5)`` rows ``[batch_index, x1, y1, x2, y2]`` or ``(R, 4)`` XYXY, input px.
        min_level, max_level: the levels pooled from (P2-P5).
        canonical_box_size, canonical_level: a RoI of this side maps to this level.

    Returns:
        ``(R,)`` int64 in ``0 .. max_level - min_level`` (0 = P``min_level``).
    """
    boxes = rois[:, 1:] if rois.shape[-1] == 5 else rois
    boxes = boxes.to(torch.float64)  # so the 1e-8 is not lost at 224 * 2^k
    side = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    level = torch.floor(canonical_level + torch.log2(side / canonical_box_size + 1e-8))
    return level.clamp(min=min_level, max=max_level).to(torch.int64) - min_level


class MultiLevelRoIPool(nn.Module):
    """Pools each RoI from its level of the pyramid (see the module docstring).

    Args:
        strides: strides of the pooled levels, lowest first (P2-P5: 4, 8, 16, 32); the first is
            level ``min_level``.
        channels: channels C of every level.
        pooler: ``"roi_align"``, ``"deformable"`` or ``"psroi_plain"``.
        pooled_size: P, output bins per side.
        sampling_ratio: RoIAlign samples per bin side, 0 = adaptive (``ceil(bin size)``).
        sample_per_part: bilinear samples per bin side of the two PS-RoI poolers.
        trans_std: scale of the deformable offsets.
        offset_lr_mult: learning-rate multiplier of the offset fcs.
        min_level: the pyramid level of ``strides[0]`` (2 for P2).

    Shape:
        forward(features [(N, C, H_l, W_l)] in ``strides`` order, rois (R, 5)) ->
        ``(R, C, P, P)`` in the order of ``rois``, in the features' dtype.
    """

    def __init__(self, *, strides: Sequence[int], channels: int, pooler: str = "roi_align",
                 pooled_size: int = 7, sampling_ratio: int = 0, sample_per_part: int = 4,
                 trans_std: float = 0.1, offset_lr_mult: float = 0.01, min_level: int = 2):
        super().__init__()
        if pooler not in POOLERS:
            raise ValueError(f"pooler must be one of {POOLERS}, got {pooler!r}")
        if not strides or any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ValueError(f"strides must be the doubling strides of consecutive levels, "
                             f"got {list(strides)}")
        self.strides = tuple(int(s) for s in strides)
        self.channels = channels
        self.pooler = pooler
        self.pooled_size = pooled_size
        self.min_level = min_level
        self.max_level = min_level + len(strides) - 1
        if pooler == "roi_align":
            self.pools = nn.ModuleList(
                RoIAlign(output_size=pooled_size, spatial_scale=1.0 / s,
                         sampling_ratio=sampling_ratio, aligned=True) for s in self.strides)
        else:
            self.pools = nn.ModuleList(
                DeformPSRoIPool(spatial_scale=1.0 / s, output_dim=channels, group_size=1,
                                pooled_size=pooled_size, part_size=pooled_size,
                                sample_per_part=sample_per_part, trans_std=trans_std)
                for s in self.strides)
        if pooler == "deformable":
            # One offset fc per level, as the official offset_p2 .. offset_p5.
            self.offset_fcs = nn.ModuleList(
                zero_offset_layer(nn.Linear(channels * pooled_size * pooled_size,
                                            2 * pooled_size * pooled_size), offset_lr_mult)
                for _ in self.strides)

    def levels(self, rois: torch.Tensor) -> torch.Tensor:
        """``(R,)`` level index (0 = ``strides[0]``) of each RoI."""
        return assign_boxes_to_levels(rois, self.min_level, self.max_level)

    def pool_level(self, level: int, feature: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """Pools ``rois (R_l, 5)`` from one level's ``feature`` -> ``(R_l, C, P, P)``."""
        pool = self.pools[level]
        if self.pooler == "deformable":
            return pool(feature, rois, self.offsets(level, feature, rois))
        return pool(feature, rois)

    def offsets(self, level: int, feature: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """The deformable pooling offsets ``(R_l, 2, P, P)`` of ``rois`` on one level
        (``pooler="deformable"`` only): the level's fc on the RoIs pooled without offsets."""
        p = self.pooled_size
        return self.offset_fcs[level](self.pools[level](feature, rois).flatten(1)).view(-1, 2, p, p)

    def forward(self, features: List[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        if len(features) != len(self.strides):
            raise ValueError(f"MultiLevelRoIPool has {len(self.strides)} levels (strides "
                             f"{list(self.strides)}), got {len(features)} feature maps")
        check_rois(rois)
        for i, f in enumerate(features):
            if f.dim() != 4 or f.size(1) != self.channels:
                raise ValueError(f"features[{i}] must be (N, {self.channels}, H, W), got "
                                 f"{tuple(f.shape)}")
        levels = self.levels(rois)
        p = self.pooled_size
        out = features[0].new_zeros((rois.shape[0], self.channels, p, p))
        for level, feature in enumerate(features):
            idx = torch.nonzero(levels == level).flatten()
            pooled = self.pool_level(level, feature, rois[idx])
            out = out.index_put((idx,), pooled.to(out.dtype))
        return out

    def extra_repr(self) -> str:
        return (f"pooler={self.pooler!r}, levels=P{self.min_level}-P{self.max_level}, "
                f"strides={list(self.strides)}")
