"""Pieces shared by the detection datasets: target construction, the decoded-size check and
the errors."""
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from .transforms import clip_and_filter_boxes, decode_image, image_to_tensor


class DatasetError(ValueError):
    """A dataset that cannot be used as it is: a malformed annotation entry, a path outside the
    dataset root, classes that do not fit the model, an image whose size is not the stated one.
    The message names the file and the entry."""


def check_image_size(image: np.ndarray, stated_hw: Tuple[int, int], path: str, where: str) -> None:
    """Checks that a decoded image has the size its annotation states.

    The annotation's boxes are in the frame of the image its annotator saw, whose size is the
    stated one. A decoded image of another size (EXIF orientation applied, see
    ``decode_image``) puts those boxes on other pixels, and which of the two frames the boxes
    were drawn in cannot be told from the file, so a mismatch is an error, never a silent fix.

    Args:
        image: the decoded ``(H, W, 3)`` image.
        stated_hw: ``(height, width)`` from the annotation.
        path: the image file (read again, without EXIF orientation, to explain a mismatch).
        where: the annotation entry, e.g. ``"ann.json: image id 7"``.

    Raises:
        DatasetError: naming ``where``, ``path`` and both sizes.
    """
    h, w = image.shape[:2]
    sh, sw = int(stated_hw[0]), int(stated_hw[1])
    if (h, w) == (sh, sw):
        return
    why = ""
    try:
        raw = decode_image(path, apply_exif_orientation=False).shape[:2]
    except (OSError, RuntimeError):
        raw = (h, w)
    if raw != (h, w):
        why = (f"; its EXIF orientation turns the stored {raw[0]}x{raw[1]} pixels into "
               f"{h}x{w}, so the boxes may be in either frame")
    raise DatasetError(f"{where}: image file {path!r} decodes to height x width {h}x{w} "
                       f"(EXIF orientation applied) but the annotation states {sh}x{sw}{why}; "
                       "fix the annotation's size (and its boxes, if they were drawn in the "
                       "other frame) or the image")


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
