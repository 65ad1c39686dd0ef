"""Checks and converts the box/score/label arrays handed to the evaluators."""
from typing import Any, Optional

import numpy as np
import torch


def to_numpy(value: Any, name: str, dtype) -> np.ndarray:
    """Returns ``value`` (tensor, array or list) as a numpy array of ``dtype``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        value = value.double().numpy() if value.is_floating_point() else value.numpy()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot convert {type(value).__name__} to a {np.dtype(dtype)} "
                         f"array ({e})") from None


def check_boxes(boxes: Any, name: str) -> np.ndarray:
    """``boxes`` as a float64 ``(N, 4)`` XYXY array; an empty input gives ``(0, 4)``."""
    arr = to_numpy(boxes, name, np.float64)
    if arr.size == 0:
        return arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4) XYXY, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return arr


def check_vector(value: Any, name: str, n: int, dtype) -> np.ndarray:
    """``value`` as a 1-D array of length ``n`` (the number of boxes)."""
    arr = to_numpy(value, name, dtype)
    if arr.size == 0 and n == 0:
        return arr.reshape(0)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match the boxes, got shape {arr.shape}")
    return arr


def check_labels(labels: Any, name: str, n: int, num_classes: int) -> np.ndarray:
    """``labels`` as an int64 ``(n,)`` array with every value in ``0..num_classes-1``."""
    arr = check_vector(labels, name, n, np.float64)
    if n and (np.any(arr != np.round(arr)) or arr.min() < 0 or arr.max() >= num_classes):
        bad = arr[(arr != np.round(arr)) | (arr < 0) | (arr >= num_classes)][0]
        raise ValueError(f"{name} must be integers in 0..{num_classes - 1} "
                         f"(K={num_classes} classes, background excluded), got {bad:g}")
    return arr.astype(np.int64)


def image_id_of(target: Any, name: str) -> Any:
    """The image id of a target dict (``target["image_id"]``) or of a plain id."""
    if isinstance(target, dict):
        if "image_id" not in target:
            raise ValueError(f"{name} has no 'image_id' key (keys: {sorted(target)})")
        target = target["image_id"]
    if isinstance(target, torch.Tensor):
        target = target.item()
    if isinstance(target, np.generic):
        target = target.item()
    if not isinstance(target, (int, str)) or isinstance(target, bool):
        raise ValueError(f"{name}: image id must be an int or str, got {type(target).__name__}")
    return target


def optional_difficult(difficult: Optional[Any], n: int, name: str) -> np.ndarray:
    """``difficult`` as a bool ``(n,)`` array; ``None`` means no box is difficult."""
    if difficult is None:
        return np.zeros(n, dtype=bool)
    return check_vector(difficult, name, n, bool)


def add_batch(add_detections, targets, outputs) -> None:
    """Feeds a batch of model outputs to ``add_detections(image_id, boxes, scores, labels)``.

    Args:
        add_detections: the evaluator's per-image method.
        targets: per image, a target dict with ``"image_id"`` or the id itself.
        outputs: per image, ``{"boxes": (D, 4), "scores": (D,), "labels": (D,)}`` in
            original-image pixels (the detector's eval output).
    """
    if len(targets) != len(outputs):
        raise ValueError(f"process got {len(targets)} targets but {len(outputs)} outputs")
    for i, (t, o) in enumerate(zip(targets, outputs)):
        add_detections(image_id_of(t, f"targets[{i}]"), o["boxes"], o["scores"], o["labels"])
