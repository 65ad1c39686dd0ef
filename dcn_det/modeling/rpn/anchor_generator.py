"""Anchors of the RPN, laid out as in the official Faster R-CNN / R-FCN code."""
import math
from typing import Sequence

import torch
from torch import nn


class AnchorGenerator(nn.Module):
    """Generates ``A = len(ratios) * len(scales)`` anchors at every cell of a feature map.

    The official ``generate_anchors`` builds a 16 px base anchor (``base_size = stride``),
    changes its aspect ratio keeping the area (``w = round(sqrt(base^2 / r))``,
    ``h = round(w * r)``, ratio = h / w), then multiplies both sides by each scale. The
    anchor order is ratio-major, scale-minor; the full list is position-major (row ``i``,
    column ``j``) with the ``A`` anchors innermost, matching the RPN head's output layout
    ``(N, A*k, H, W) -> (N, H, W, A, k)``.

    Frame: continuous XYXY pixels of the (padded) input image. Feature cell ``(i, j)`` covers
    pixels ``[j*stride, (j+1)*stride) x [i*stride, (i+1)*stride)``, and its anchors are centred
    at ``((j + 0.5) * stride, (i + 0.5) * stride)``. This is the official anchor (whose
    inclusive-pixel centre is ``j*stride + (stride-1)/2``) converted to continuous coordinates.

    Args:
        stride: feature stride in input pixels (16 for res4).
        scales: anchor side multipliers of the base anchor, e.g. ``(8, 16, 32)`` -> 128-512 px.
        ratios: height / width ratios, e.g. ``(0.5, 1, 2)``.
    """

    def __init__(self, stride: int = 16, scales: Sequence[float] = (8, 16, 32),
                 ratios: Sequence[float] = (0.5, 1.0, 2.0)):
        super().__init__()
        if stride < 1:
            raise ValueError(f"AnchorGenerator stride must be >= 1, got {stride}")
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"AnchorGenerator scales must be positive numbers, got {list(scales)}")
        if not ratios or any(r <= 0 for r in ratios):
            raise ValueError(f"AnchorGenerator ratios must be positive numbers, got {list(ratios)}")
        self.stride = int(stride)
        self.scales = tuple(float(s) for s in scales)
        self.ratios = tuple(float(r) for r in ratios)
        self.register_buffer("cell_anchors", self._cell_anchors(), persistent=False)

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map cell (``A``)."""
        return len(self.scales) * len(self.ratios)

    def _cell_anchors(self) -> torch.Tensor:
        """``(A, 4)`` anchors of the cell at the origin, XYXY around ``(stride/2, stride/2)``."""
        base = float(self.stride)
        centre = 0.5 * base
        rows = []
        for r in self.ratios:
            # Python's round() rounds half to even like numpy's, as the official code does.
            w = float(round(math.sqrt(base * base / r)))
            h = float(round(w * r))
            for s in self.scales:
                rows.append([centre - 0.5 * w * s, centre - 0.5 * h * s,
                             centre + 0.5 * w * s, centre + 0.5 * h * s])
        return torch.tensor(rows, dtype=torch.float32)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """Anchors for ``feature (N, C, H, W)`` -> ``(H*W*A, 4)`` XYXY input pixels."""
        h, w = feature.shape[-2:]
        dev = feature.device
        sx = torch.arange(w, device=dev, dtype=torch.float32) * self.stride
        sy = torch.arange(h, device=dev, dtype=torch.float32) * self.stride
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 1, 4)
        return (shifts + self.cell_anchors.to(dev)[None]).reshape(-1, 4)
