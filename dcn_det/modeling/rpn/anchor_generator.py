"""Anchors of the RPN: one feature map as in the official Faster R-CNN / R-FCN code, or the
FPN levels as in detectron2."""
import math
from typing import List, Sequence

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

    def grid_anchors(self, features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """The multi-level interface of :class:`FPNAnchorGenerator` for one level:
        ``[feature (N, C, H, W)]`` -> ``[(H*W*A, 4)]``."""
        if len(features) != 1:
            raise ValueError(f"AnchorGenerator covers one feature map, got {len(features)}")
        return [self(features[0])]


class FPNAnchorGenerator(nn.Module):
    """detectron2's ``DefaultAnchorGenerator``: one anchor size per pyramid level.

    Level ``l`` (stride ``strides[l]``) gets ``len(ratios)`` anchors of area ``sizes[l]**2``
    per cell: ``w = sqrt(size**2 / r)``, ``h = r * w`` (ratio = h / w, no rounding), centred
    at ``((j + offset) * stride, (i + offset) * stride)`` for cell ``(i, j)``. The order is
    position-major with the ratios innermost, as the RPN head's outputs.

    Frame: continuous XYXY pixels of the (padded) input image.

    Args:
        sizes: anchor side (sqrt of its area) per level, e.g. ``(32, 64, 128, 256, 512)``.
        strides: stride of each level, e.g. ``(4, 8, 16, 32, 64)``.
        ratios: height / width ratios, shared by all levels.
        offset: anchor centre within the cell, in [0, 1); detectron2's default is 0.0.
    """

    def __init__(self, sizes: Sequence[float], strides: Sequence[int],
                 ratios: Sequence[float] = (0.5, 1.0, 2.0), offset: float = 0.0):
        super().__init__()
        if len(sizes) != len(strides) or not sizes:
            raise ValueError(f"FPNAnchorGenerator needs one size per stride, got sizes "
                             f"{list(sizes)} and strides {list(strides)}")
        if any(s <= 0 for s in sizes) or any(s < 1 for s in strides):
            raise ValueError(f"FPNAnchorGenerator sizes must be > 0 and strides >= 1, got "
                             f"sizes {list(sizes)}, strides {list(strides)}")
        if not ratios or any(r <= 0 for r in ratios):
            raise ValueError(f"FPNAnchorGenerator ratios must be positive numbers, got {list(ratios)}")
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"FPNAnchorGenerator offset must be in [0, 1), got {offset}")
        self.sizes = tuple(float(s) for s in sizes)
        self.strides = tuple(int(s) for s in strides)
        self.ratios = tuple(float(r) for r in ratios)
        self.offset = float(offset)
        for level, size in enumerate(self.sizes):
            self.register_buffer(f"cell_anchors_{level}", self.cell_anchors(size, self.ratios),
                                 persistent=False)

    @property
    def num_anchors(self) -> int:
        """Anchors per cell (``A``), the same on every level."""
        return len(self.ratios)

    @staticmethod
    def cell_anchors(size: float, ratios: Sequence[float]) -> torch.Tensor:
        """``(A, 4)`` XYXY anchors centred at the origin (detectron2's cell anchors)."""
        rows = []
        for r in ratios:
            w = math.sqrt(size * size / r)
            h = r * w
            rows.append([-0.5 * w, -0.5 * h, 0.5 * w, 0.5 * h])
        return torch.tensor(rows, dtype=torch.float32)

    def grid_anchors(self, features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Anchors of each level: ``features[l] (N, C, H_l, W_l)`` -> ``(H_l*W_l*A, 4)``."""
        if len(features) != len(self.strides):
            raise ValueError(f"FPNAnchorGenerator has {len(self.strides)} levels, got "
                             f"{len(features)} feature maps")
        out = []
        for level, (feature, stride) in enumerate(zip(features, self.strides)):
            h, w = feature.shape[-2:]
            dev = feature.device
            # Cell (i, j) in row-major order. An exported program never sees a 1-cell level
            # (export.min_side keeps P6 at 2 cells or more), so the grid may be a meshgrid.
            sx = (torch.arange(w, device=dev, dtype=torch.float32) + self.offset) * stride
            sy = (torch.arange(h, device=dev, dtype=torch.float32) + self.offset) * stride
            yy, xx = torch.meshgrid(sy, sx, indexing="ij")
            shifts = torch.stack((xx, yy, xx, yy), dim=-1).reshape(-1, 4)
            cell = getattr(self, f"cell_anchors_{level}").to(dev)
            out.append((shifts[:, None, :] + cell[None]).reshape(-1, 4))
        return out

    def forward(self, features: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        return self.grid_anchors(features)
