"""Drawing composed sampling points and deformable pooling bins onto images (OpenCV).

Images are ``(H, W, 3) uint8`` RGB; points and rectangles must already be in that image's
pixels (``ComposedPoints.scaled`` / ``PoolBins.scaled`` map input-image pixels to the
original image). Detections are drawn with :func:`dcn_det.visualization.draw_detections`.
"""
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np

from dcn_det.analysis.pool_bins import PoolBins
from dcn_det.analysis.sampling import ComposedPoints
from dcn_det.visualization import class_color

_FONT = cv2.FONT_HERSHEY_SIMPLEX
# RGB colour of each level of a composed chain, top layer first (9 points, 81, 729, ...).
LEVEL_COLORS = ((255, 230, 0), (255, 110, 0), (230, 20, 60), (170, 0, 255), (0, 120, 255))
UNIT_COLOR = (0, 220, 0)
# Opacity steps for modulated points (blending per point would be slow; 4 steps read fine).
_ALPHA_STEPS = 4


def _check_rgb(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8:
        raise ValueError(f"image_rgb must be an (H, W, 3) uint8 RGB array, got "
                         f"{getattr(image, 'dtype', type(image).__name__)} "
                         f"{getattr(image, 'shape', '')}")


def level_color(level: int) -> Tuple[int, int, int]:
    """RGB colour of composition level ``level`` (0 = the top layer)."""
    return LEVEL_COLORS[level % len(LEVEL_COLORS)]


def draw_sampling_points(image_rgb: np.ndarray, composed: ComposedPoints, *,
                         legend: bool = True) -> np.ndarray:
    """Draws composed sampling points: one colour per layer of the chain, the units marked.

    Deeper levels (more points) are drawn first and smaller, so the top layer's 9 points stay
    visible. Each point's size and opacity grow with its weight (product of v2 masks along
    its path) relative to the largest weight of its level; v1 points are all full size.

    Args:
        image_rgb: ``(H, W, 3) uint8`` RGB; not modified.
        composed: points in this image's pixels.
        legend: write the layer names and point counts in the top-left corner.

    Returns:
        A new ``(H, W, 3) uint8`` RGB image.
    """
    _check_rgb(image_rgb)
    out = image_rgb.copy()
    h, w = out.shape[:2]
    base = max(1.0, min(h, w) / 220.0)
    n_levels = len(composed.points)
    for level in reversed(range(n_levels)):
        pts = composed.points[level].reshape(-1, 2).numpy()
        wts = composed.weights[level].reshape(-1).double().numpy()
        top = wts.max() if wts.size and wts.max() > 0 else 1.0
        rel = np.clip(wts / top, 0.0, 1.0)
        radius_full = base * (1.0 + 0.8 * (n_levels - 1 - level))
        color = level_color(level)
        steps = np.minimum((rel * _ALPHA_STEPS).astype(int), _ALPHA_STEPS - 1)
        for step in range(_ALPHA_STEPS):
            sel = steps == step
            if not sel.any():
                continue
            alpha = 0.3 + 0.7 * (step + 1) / _ALPHA_STEPS
            overlay = out.copy()
            for (x, y), r in zip(pts[sel], rel[sel]):
                if not (np.isfinite(x) and np.isfinite(y)):
                    continue
                rad = max(1, int(round(radius_full * (0.5 + 0.5 * r))))
                cv2.circle(overlay, (int(round(x)), int(round(y))), rad, color, -1, cv2.LINE_AA)
            out = cv2.addWeighted(overlay, alpha, out, 1.0 - alpha, 0.0)
    unit_r = max(3, int(round(base * 3)))
    for x, y in composed.units.numpy():
        c = (int(round(x)), int(round(y)))
        cv2.circle(out, c, unit_r, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(out, c, max(2, unit_r - 1), UNIT_COLOR, -1, cv2.LINE_AA)
    if legend:
        entries = [(UNIT_COLOR, "unit")] + [
            (level_color(lv), f"{name} ({composed.points[lv].shape[1]} pts)")
            for lv, name in enumerate(composed.layers)]
        _legend(out, entries)
    return out


def _legend(out: np.ndarray, entries: Sequence[Tuple[Tuple[int, int, int], str]]) -> None:
    """Writes colour swatches and labels on a dark band in the top-left corner (in place)."""
    scale = max(0.35, min(out.shape[:2]) / 900)
    (_, th), base = cv2.getTextSize("Ag", _FONT, scale, 1)
    line = th + base + 4
    width = max(cv2.getTextSize(t, _FONT, scale, 1)[0][0] for _, t in entries) + line + 12
    height = line * len(entries) + 6
    band = out[:height, :width].astype(np.float32)
    out[:height, :width] = (band * 0.35).astype(np.uint8)
    for i, (color, text) in enumerate(entries):
        y = 4 + i * line
        cv2.rectangle(out, (4, y + 2), (4 + th, y + 2 + th), color, -1)
        cv2.putText(out, text, (8 + th + 4, y + th + 1), _FONT, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)


def draw_pool_bins(image_rgb: np.ndarray, bins: PoolBins, labels: Optional[Sequence[int]] = None,
                   *, regular: bool = True) -> np.ndarray:
    """Draws deformable pooling bins: offset bins in the box's class colour, regular faint.

    Args:
        image_rgb: ``(H, W, 3) uint8`` RGB; not modified.
        bins: rectangles in this image's pixels.
        labels: ``(R,)`` class of each box (its colour, :func:`class_color`); None = one colour.
        regular: also draw the regular (offset-free) bins, faintly.

    Returns:
        A new ``(H, W, 3) uint8`` RGB image.
    """
    _check_rgb(image_rgb)
    out = image_rgb.copy()
    r = bins.shifted.shape[0]
    labels = [0] * r if labels is None else [int(v) for v in labels]
    if len(labels) != r:
        raise ValueError(f"labels must have one entry per box: {r} boxes, got {len(labels)}")
    thick = max(1, int(round(min(out.shape[:2]) / 400)))

    def rects(overlay, rows, color, t):
        for x1, y1, x2, y2 in rows.reshape(-1, 4).tolist():
            if all(np.isfinite(v) for v in (x1, y1, x2, y2)):
                cv2.rectangle(overlay, (int(round(x1)), int(round(y1))),
                              (int(round(x2)), int(round(y2))), color, t, cv2.LINE_AA)

    if regular:
        overlay = out.copy()
        for i in range(r):
            rects(overlay, bins.regular[i], (235, 235, 235), 1)
        out = cv2.addWeighted(overlay, 0.35, out, 0.65, 0.0)
    for i in range(r):
        color = class_color(labels[i])
        rects(out, bins.shifted[i], color, thick)
        centres = ((bins.shifted[i, ..., :2] + bins.shifted[i, ..., 2:]) / 2).reshape(-1, 2)
        for x, y in centres.tolist():
            cv2.circle(out, (int(round(x)), int(round(y))), thick + 1, color, -1, cv2.LINE_AA)
    return out

