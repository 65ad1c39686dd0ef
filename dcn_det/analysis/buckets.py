"""Which object size a feature location belongs to (the columns of the paper's Table 2).

A location goes to the smallest ground-truth box (by area) that contains its centre; that
box's area in ORIGINAL-image pixels puts it in "small" (``area < t_small``), "medium"
(``t_small <= area < t_large``) or "large" (``area >= t_large``), COCO's rule with
``t_small = 32**2``, ``t_large = 96**2`` by default. A location inside no box is
"background".
"""
from typing import Sequence, Tuple

import torch

BUCKETS = ("small", "medium", "large", "background")
BACKGROUND = 3
DEFAULT_AREA_THRESHOLDS = (32.0 ** 2, 96.0 ** 2)


def check_area_thresholds(area_thresholds: Sequence[float]) -> Tuple[float, float]:
    """Returns ``(t_small, t_large)``; raises ValueError unless ``0 < t_small <= t_large``."""
    try:
        t_small, t_large = (float(t) for t in area_thresholds)
    except (TypeError, ValueError):
        raise ValueError(f"area_thresholds must be two numbers (small/medium and medium/large "
                         f"areas in original-image pixels), got {area_thresholds!r}") from None
    if not 0 < t_small <= t_large:
        raise ValueError(f"area_thresholds must satisfy 0 < small <= large, got "
                         f"{area_thresholds!r}")
    return t_small, t_large


def assign_buckets(points_xy: torch.Tensor, boxes: torch.Tensor, areas: torch.Tensor,
                   area_thresholds: Sequence[float] = DEFAULT_AREA_THRESHOLDS) -> torch.Tensor:
    """Bucket index of every point: 0 small, 1 medium, 2 large, 3 background.

    Args:
        points_xy: ``(L, 2)`` points ``(x, y)`` in the boxes' frame (continuous pixels).
        boxes: ``(M, 4)`` XYXY boxes in that frame; a point is inside when
            ``x1 <= x <= x2`` and ``y1 <= y <= y2``.
        areas: ``(M,)`` the boxes' areas in ORIGINAL-image pixels (they decide the bucket
            and which containing box is the smallest).
        area_thresholds: ``(t_small, t_large)``.

    Returns:
        ``(L,)`` int64 bucket indices into :data:`BUCKETS`.
    """
    t_small, t_large = check_area_thresholds(area_thresholds)
    points_xy = points_xy.reshape(-1, 2).float()
    boxes = boxes.reshape(-1, 4).float()
    areas = areas.reshape(-1).float()
    if areas.shape[0] != boxes.shape[0]:
        raise ValueError(f"areas must have one entry per box: {boxes.shape[0]} boxes, got "
                         f"areas of shape {tuple(areas.shape)}")
    out = torch.full((points_xy.shape[0],), BACKGROUND, dtype=torch.int64)
    if boxes.shape[0] == 0 or points_xy.shape[0] == 0:
        return out
    x, y = points_xy[:, 0:1], points_xy[:, 1:2]
    inside = ((x >= boxes[:, 0]) & (x <= boxes[:, 2]) & (y >= boxes[:, 1]) & (y <= boxes[:, 3]))
    masked = torch.where(inside, areas.expand_as(inside), torch.full_like(inside, float("inf"),
                                                                          dtype=areas.dtype))
    smallest = masked.min(1).values  # (L,) area of the smallest containing box, inf if none
    found = torch.isfinite(smallest)
    size = torch.where(smallest < t_small, 0, torch.where(smallest < t_large, 1, 2))
    return torch.where(found, size, out)
