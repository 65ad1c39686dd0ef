"""Image decoding and the geometric transforms of the training and test pipelines (OpenCV).

A transform is a callable ``(image, target) -> (image, target)`` where ``image`` is an
``np.ndarray (H, W, 3) uint8`` in RGB order and ``target`` holds at least
``"boxes": (M, 4) float32 tensor`` (XYXY, absolute pixels, continuous coordinates: pixel ``i``
covers ``[i, i+1)``, so a full-image box is ``[0, 0, W, H]``) and ``"labels": (M,) int64``.
Any other per-box entry (``"difficult"``) is kept in step with the boxes. Randomness comes from
``torch``'s global generator, which the DataLoader seeds per worker, so runs are reproducible.
"""
import os
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np
import torch

# Entries of a target that have one row per box and must follow box filtering.
PER_BOX_KEYS = ("boxes", "labels", "difficult")

# Boxes thinner than this (in pixels, after clipping) carry no signal and would give
# degenerate regression targets.
MIN_BOX_SIZE = 1e-3

_JPEG_MAGIC = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def list_images(path: str) -> List[str]:
    """The image files under ``path`` (a file, or a folder read non-recursively), sorted.

    Raises:
        FileNotFoundError: ``path`` is neither a file nor a folder, or the folder has no
            images (names ``--input``).
    """
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--input {path!r} is neither an image file nor a folder")
    files = sorted(os.path.join(path, n) for n in os.listdir(path)
                   if n.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise FileNotFoundError(f"--input folder {path!r} has no images "
                                f"({', '.join(IMAGE_EXTENSIONS)})")
    return files


def decode_image(path: str, apply_exif_orientation: bool = True) -> np.ndarray:
    """Reads an image file as 8-bit RGB.

    The EXIF orientation is applied (OpenCV's ``IMREAD_COLOR`` does it, for ``cv2.imdecode``
    as for ``cv2.imread``); grayscale, RGBA (alpha dropped) and 16-bit files are converted to
    8-bit, 3-channel RGB.

    Args:
        path: the image file.
        apply_exif_orientation: False = the stored pixels as they are, EXIF orientation
            ignored (used to explain a size mismatch, never to train on).

    Returns:
        ``np.ndarray (H, W, 3) uint8``, RGB.

    Raises:
        FileNotFoundError: the file does not exist.
        RuntimeError: the file is empty, truncated or not a decodable image (names the file).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path!r}")
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        raise RuntimeError(f"image file is empty: {path!r}")
    # libjpeg decodes a truncated JPEG into a grey-padded image with only a warning, so a
    # missing end-of-image marker is checked by hand (trailing padding bytes are tolerated).
    if data[:2] == _JPEG_MAGIC and not data.rstrip(b"\x00\r\n\t ").endswith(_JPEG_EOI):
        raise RuntimeError(f"image file is truncated (JPEG has no end-of-image marker): {path!r}")
    flags = cv2.IMREAD_COLOR if apply_exif_orientation else \
        cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise RuntimeError(f"image file is corrupt, truncated or not an image: {path!r}")
    if image.dtype != np.uint8:  # IMREAD_COLOR already reduces 16-bit, but be certain
        image = (image.astype(np.float64) / np.iinfo(image.dtype).max * 255.0).round().astype(np.uint8)
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``np.ndarray (H, W, 3) uint8`` -> ``uint8 tensor (3, H, W)`` (a copy)."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def clip_and_filter_boxes(target: Dict, height: int, width: int) -> Dict:
    """Clips boxes to ``[0, width] x [0, height]`` and drops the degenerate ones.

    A box whose width or height is below ``MIN_BOX_SIZE`` after clipping is removed together
    with its label (and ``difficult`` flag).

    Args:
        target: dict with ``"boxes": (M, 4)`` XYXY pixels and the other per-box entries.
        height, width: the image size in pixels.

    Returns:
        a new dict (the input is not modified).
    """
    out = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0.0, float(width))
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0.0, float(height))
    keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIZE) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIZE)
    out["boxes"] = boxes[keep]
    for key in PER_BOX_KEYS[1:]:
        if key in target:
            out[key] = target[key][keep]
    return out


class Compose:
    """Applies transforms in order."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image: np.ndarray, target: Dict) -> Tuple[np.ndarray, Dict]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


def resized_shape(height: int, width: int, short_size: int, max_size: int) -> Tuple[int, int]:
    """The ``(h, w)`` that ResizeShortestEdge produces for an image of ``(height, width)``.

    The short side becomes ``short_size`` unless the long side would then exceed
    ``max_size`` (0 = no limit), in which case the long side becomes ``max_size``.
    """
    scale = short_size / min(height, width)
    if max_size > 0 and max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


class ResizeShortestEdge:
    """Resizes so the short side is one of ``short_sizes`` (chosen at random per image).

    Boxes are scaled by the exact per-axis ratio of the new to the old size, so they stay
    on the same image content after rounding of the output size.

    Args:
        short_sizes: candidate short-side lengths in pixels; several = multi-scale training.
        max_size: cap on the long side in pixels (0 = no cap).
        interpolation: an OpenCV interpolation flag.
    """

    def __init__(self, short_sizes: Sequence[int], max_size: int = 0,
                 interpolation: int = cv2.INTER_LINEAR):
        if isinstance(short_sizes, int):
            short_sizes = [short_sizes]
        short_sizes = list(short_sizes)
        if not short_sizes or any(not isinstance(s, int) or s <= 0 for s in short_sizes):
            raise ValueError(f"short_sizes must be a non-empty list of positive ints, got {short_sizes!r}")
        if not isinstance(max_size, int) or max_size < 0:
            raise ValueError(f"max_size must be an int >= 0 (0 = no cap), got {max_size!r}")
        self.short_sizes = short_sizes
        self.max_size = max_size
        self.interpolation = interpolation

    def __call__(self, image: np.ndarray, target: Dict) -> Tuple[np.ndarray, Dict]:
        h, w = image.shape[:2]
        if len(self.short_sizes) == 1:
            short = self.short_sizes[0]
        else:
            short = self.short_sizes[int(torch.randint(len(self.short_sizes), ()).item())]
        new_h, new_w = resized_shape(h, w, short, self.max_size)
        if (new_h, new_w) != (h, w):
            image = cv2.resize(image, (new_w, new_h), interpolation=self.interpolation)
            target = dict(target)
            scale = torch.tensor([new_w / w, new_h / h, new_w / w, new_h / h], dtype=torch.float32)
            target["boxes"] = target["boxes"] * scale
        return image, clip_and_filter_boxes(target, new_h, new_w)

    def __repr__(self) -> str:
        return f"ResizeShortestEdge(short_sizes={self.short_sizes}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """Mirrors the image left-right with probability ``p``; ``x -> W - x`` for boxes."""

    def __init__(self, p: float = 0.5):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p (flip probability) must be in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, image: np.ndarray, target: Dict) -> Tuple[np.ndarray, Dict]:
        if self.p == 0.0 or (self.p < 1.0 and torch.rand(()).item() >= self.p):
            return image, target
        h, w = image.shape[:2]
        image = np.ascontiguousarray(image[:, ::-1])
        target = dict(target)
        boxes = target["boxes"]
        target["boxes"] = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], dim=1)
        return image, clip_and_filter_boxes(target, h, w)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def build_transforms(min_sizes: List[int], max_size: int, flip_prob: float) -> Compose:
    """The standard pipeline: multi-scale shortest-edge resize, then a horizontal flip."""
    ts: List[Callable] = [ResizeShortestEdge(list(min_sizes), max_size)]
    if flip_prob > 0:
        ts.append(RandomHorizontalFlip(flip_prob))
    return Compose(ts)
