"""Drawing detections onto images (OpenCV) and writing them as PNG files.

Images here are ``np.ndarray (H, W, 3) uint8`` in RGB order; boxes are XYXY in absolute pixels
of that image (continuous coordinates: a full-image box is ``[0, 0, W, H]``).
"""
import colorsys
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from dcn_det.io.atomic import write_bytes

_FONT = cv2.FONT_HERSHEY_SIMPLEX
GT_COLOR = (255, 255, 255)  # ground-truth boxes: white, apart from the saturated class colours


def class_color(label: int) -> Tuple[int, int, int]:
    """A bright RGB colour for class ``label``; neighbouring labels get very different hues.

    Stepping the hue by the golden ratio spreads any number of classes evenly around the
    colour wheel, so the colours stay distinct without a fixed palette size.
    """
    hue = (int(label) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _as_numpy(x, name: str, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be array-like of numbers, got {type(x).__name__}: {e}") \
            from e


def _check_image(image, name: str = "image_rgb") -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8:
        got = (f"{type(image).__name__} {image.dtype} {image.shape}"
               if isinstance(image, np.ndarray) else type(image).__name__)
        raise ValueError(f"{name} must be an (H, W, 3) uint8 RGB array, got {got}")


def draw_detections(image_rgb: np.ndarray, boxes, scores, labels,
                    class_names: Optional[Sequence[str]] = None,
                    score_thresh: float = 0.0) -> np.ndarray:
    """Draws boxes with ``"<class> <score>"`` captions; each class has its own colour.

    Args:
        image_rgb: ``(H, W, 3) uint8`` RGB image; it is not modified.
        boxes: ``(D, 4)`` XYXY pixels of ``image_rgb`` (tensor or array).
        scores: ``(D,)`` confidences in [0, 1].
        labels: ``(D,)`` integer labels in ``0..K-1``.
        class_names: the K class names (label ``k`` is ``class_names[k]``); None writes the
            label number instead.
        score_thresh: detections with a lower score are not drawn.

    Returns:
        A new ``(H, W, 3) uint8`` RGB image with the drawings.

    Raises:
        ValueError: wrong image type/shape, inconsistent lengths, or a label without a name.
    """
    _check_image(image_rgb)
    boxes = _as_numpy(boxes, "boxes", np.float64).reshape(-1, 4) if np.size(boxes) else \
        np.zeros((0, 4))
    scores = _as_numpy(scores, "scores", np.float64).reshape(-1)
    labels = _as_numpy(labels, "labels", np.int64).reshape(-1)
    if not (len(boxes) == len(scores) == len(labels)):
        raise ValueError(f"boxes, scores and labels must have the same length, got "
                         f"{len(boxes)}, {len(scores)} and {len(labels)}")
    _check_labels(labels, class_names)
    out = image_rgb.copy()
    # Low scores first, so the most confident box and caption end up on top.
    for i in np.argsort(scores, kind="stable"):
        if scores[i] < score_thresh:
            continue
        name = class_names[labels[i]] if class_names is not None else str(labels[i])
        _draw_box(out, boxes[i], class_color(labels[i]), f"{name} {scores[i]:.2f}")
    return out


def draw_ground_truth(image_rgb: np.ndarray, boxes, labels,
                      class_names: Optional[Sequence[str]] = None,
                      color: Tuple[int, int, int] = GT_COLOR) -> np.ndarray:
    """Draws ground-truth boxes in one colour (``GT_COLOR``), captioned ``"GT <class>"``.

    Args:
        image_rgb: ``(H, W, 3) uint8`` RGB image; it is not modified.
        boxes: ``(M, 4)`` XYXY pixels of ``image_rgb``.
        labels: ``(M,)`` integer labels in ``0..K-1``.
        class_names: the K class names; None writes the label number.
        color: the RGB colour of every box (white by default; the detections' class colours
            are saturated, so the two stay apart).

    Returns:
        A new ``(H, W, 3) uint8`` RGB image.
    """
    _check_image(image_rgb)
    boxes = _as_numpy(boxes, "boxes", np.float64).reshape(-1, 4) if np.size(boxes) else \
        np.zeros((0, 4))
    labels = _as_numpy(labels, "labels", np.int64).reshape(-1)
    if len(boxes) != len(labels):
        raise ValueError(f"boxes and labels must have the same length, got {len(boxes)} and "
                         f"{len(labels)}")
    _check_labels(labels, class_names)
    out = image_rgb.copy()
    for box, label in zip(boxes, labels):
        name = class_names[label] if class_names is not None else str(label)
        _draw_box(out, box, color, f"GT {name}")
    return out


def _check_labels(labels: np.ndarray, class_names: Optional[Sequence[str]]) -> None:
    if class_names is not None and len(labels) and (labels.min() < 0 or
                                                    labels.max() >= len(class_names)):
        raise ValueError(f"labels must be in 0..{len(class_names) - 1} to index class_names "
                         f"({len(class_names)} names), got values in "
                         f"[{labels.min()}, {labels.max()}]")


def _draw_box(out: np.ndarray, box: np.ndarray, color: Tuple[int, int, int], text: str) -> None:
    """Draws one box and its caption into ``out`` (in place)."""
    h, w = out.shape[:2]
    # Scale line width and text with the image so captions stay legible on large photos.
    thick = max(1, int(round(min(h, w) / 300)))
    font_scale = max(0.35, min(h, w) / 900)
    x1, y1, x2, y2 = (int(round(v)) for v in np.clip(box, -1, [w, h, w, h]))
    cv2.rectangle(out, (x1, y1), (x2, y2), color, thick)
    (tw, th), base = cv2.getTextSize(text, _FONT, font_scale, 1)
    # Caption above the box, or inside it when the box touches the top edge.
    ty = y1 - 2 if y1 - th - base - 2 >= 0 else min(h - 1, y1 + th + base + 2)
    tx = min(max(x1, 0), max(0, w - tw))
    cv2.rectangle(out, (tx, ty - th - base), (tx + tw, ty), color, -1)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    text_color = (0, 0, 0) if luminance > 128 else (255, 255, 255)
    cv2.putText(out, text, (tx, ty - base), _FONT, font_scale, text_color, 1, cv2.LINE_AA)


def save_png(path: str, image_rgb: np.ndarray, root: Optional[str] = None) -> str:
    """Writes an RGB image as a PNG file, atomically (parent folders are created).

    Args:
        path: destination; must end in ``.png``. A symlink there is replaced, never written
            through (:mod:`dcn_det.io.atomic`).
        image_rgb: ``(H, W, 3) uint8`` RGB image.
        root: the output directory ``path`` must stay in: a symlinked folder below it that
            leads outside is refused. None checks only ``path`` itself.

    Returns:
        ``path``.

    Raises:
        ValueError: the path does not end in ``.png`` or the image is not ``(H, W, 3) uint8``.
        OSError: OpenCV could not encode the image, or the file could not be written
            (:class:`dcn_det.io.atomic.WriteError`, naming the folder and the reason).
    """
    if not str(path).lower().endswith(".png"):
        raise ValueError(f"save_png writes PNG files: path must end in '.png', got {path!r}")
    _check_image(image_rgb)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode the image as PNG for {path!r}")
    return write_bytes(str(path), encoded, root=root, what="image")
