"""Box conventions and the padded image batch.

Every box in dcn_det is XYXY in absolute, continuous pixel coordinates: pixel ``(i, j)``
covers the square ``[j, j+1] x [i, i+1]``, so a box covering a whole ``H x W`` image is
``(0, 0, W, H)``, its width is ``x2 - x1`` (no "+1") and its area ``(x2-x1)*(y2-y1)``.
"""
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of ``boxes (N, 4)`` XYXY -> ``(N,)``; inverted boxes count as 0."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of ``a (N, 4)`` and ``b (M, 4)`` XYXY -> ``(N, M)``.

    A pair whose union is empty (two degenerate boxes) has IoU 0 rather than NaN, so
    degenerate proposals never match anything.
    """
    area_a = box_area(a)
    area_b = box_area(b)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny),
                       torch.zeros_like(inter))


def clip_boxes(boxes: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
    """Clips ``boxes (..., 4)`` XYXY to an image of ``image_size = (h, w)`` -> same shape."""
    h, w = image_size
    x = boxes[..., 0::2].clamp(min=0, max=w)
    y = boxes[..., 1::2].clamp(min=0, max=h)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def nonempty_boxes(boxes: torch.Tensor, min_size: float = 0.0) -> torch.Tensor:
    """Mask ``(N,)`` of boxes whose width and height are both strictly above ``min_size``."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    return (w > min_size) & (h > min_size)


def boxes_to_rois(boxes: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenates per-image ``boxes[i] (R_i, 4)`` into op rois ``(sum R_i, 5)``.

    Each row is ``[batch_index, x1, y1, x2, y2]``, the layout every RoI op takes.
    """
    rows = []
    for i, b in enumerate(boxes):
        rows.append(torch.cat((b.new_full((b.shape[0], 1), float(i)), b), dim=1))
    if not rows:
        return torch.zeros((0, 5))
    return torch.cat(rows, dim=0)


@dataclass
class ImageList:
    """A batch of images padded to one size.

    Attributes:
        tensor: ``(N, 3, H, W)`` padded batch (padding is 0 after normalisation, i.e. the
            mean colour); ``H`` and ``W`` are multiples of the size divisibility.
        image_sizes: ``(h_i, w_i)`` of each image before padding; image ``i`` occupies
            ``tensor[i, :, :h_i, :w_i]``.
    """

    tensor: torch.Tensor
    image_sizes: List[Tuple[int, int]]

    def __len__(self) -> int:
        return len(self.image_sizes)

    @staticmethod
    def from_tensors(tensors: Sequence[torch.Tensor], size_divisibility: int = 1) -> "ImageList":
        """Pads ``tensors[i] (C, h_i, w_i)`` at the bottom/right into one batch.

        Args:
            tensors: non-empty list of images with the same channel count and dtype.
            size_divisibility: the padded ``H`` and ``W`` are rounded up to a multiple of it
                (the backbone's total stride, so feature maps align with the image).
        """
        if len(tensors) == 0:
            raise ValueError("ImageList.from_tensors: tensors must be a non-empty list of (C, H, W)")
        if size_divisibility < 1:
            raise ValueError(f"size_divisibility must be >= 1, got {size_divisibility}")
        # no int(): keeps symbolic sizes symbolic under torch.export (dynamic image sizes)
        sizes = [(t.shape[-2], t.shape[-1]) for t in tensors]
        max_h = max(s[0] for s in sizes)
        max_w = max(s[1] for s in sizes)
        d = size_divisibility
        pad_h = (max_h + d - 1) // d * d
        pad_w = (max_w + d - 1) // d * d
        batch = torch.stack([F.pad(t, (0, pad_w - t.shape[-1], 0, pad_h - t.shape[-2]))
                             for t in tensors])
        return ImageList(batch, sizes)
