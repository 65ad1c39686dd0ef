"""Pieces shared by the detection datasets: target construction and the error wrapper."""
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from .transforms import clip_and_filter_boxes, image_to_tensor


def make_target(boxes, labels, image_id: int, orig_size: Tuple[int, int],
                difficult=None) -> Dict:
    """Builds a target dict in the project's format.

    Args:
        boxes: ``(M, 4)`` XYXY pixels (array-like).
        labels: ``(M,)`` contiguous labels in ``0..K-1``.
        image_id: the dataset's id of the image.
        orig_size: ``(h, w)`` of the image as stored on disk (before any transform).
        difficult: ``(M,)`` bools, None = all False.

    Returns:
        ``{"boxes": (M,4) float32, "labels": (M,) int64, "image_id": int,
        "orig_size": (h, w), "difficult": (M,) bool}``.
    """
    boxes_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1))
    if difficult is None:
        difficult_t = torch.zeros(labels_t.shape[0], dtype=torch.bool)
    else:
        difficult_t = torch.as_tensor(np.asarray(difficult, dtype=bool).reshape(-1))
    return {"boxes": boxes_t, "labels": labels_t, "image_id": int(image_id),
            "orig_size": (int(orig_size[0]), int(orig_size[1])), "difficult": difficult_t}


def finish_item(image: np.ndarray, target: Dict, transforms: Optional[Callable]):
    """Clips boxes to the image, applies ``transforms`` and converts the image to a tensor.

    Returns:
        ``(uint8 tensor (3, H, W) RGB, target)``.
    """
    h, w = image.shape[:2]
    target = clip_and_filter_boxes(target, h, w)
    if transforms is not None:
        image, target = transforms(image, target)
    return image_to_tensor(image), target


def load_error(path: str, index: int, err: Exception) -> RuntimeError:
    """The error raised when an item fails to load: names the file, whatever went wrong.

    DataLoader workers re-raise it in the main process, so a bad file stops training with
    its name instead of an anonymous traceback from inside OpenCV.
    """
    return RuntimeError(f"failed to load dataset item {index} (image file {path!r}): "
                        f"{type(err).__name__}: {err}")
