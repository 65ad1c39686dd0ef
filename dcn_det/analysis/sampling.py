"""Sampling locations of deformable convs, and their composition through stacked layers.

The paper's Figure 5: a unit of the top deformable layer samples 9 points of its input map;
each of those points is an activation of the deformable layer below, which samples 9 points
of its own input, and so on, so three stacked 3x3 deformable layers give 9**3 = 729 points
(ResNet-50/101 res5a-c; ResNet-18/34 res5 has 2 blocks: 81).

Choices made here (documented because the network does not define them):
    * Layers between two deformable convs of the chain (the 1x1 convs of a Bottleneck, the
      plain 3x3 ``conv1`` of a BasicBlock, norms, ReLUs, the residual sum) are treated as
      position-preserving: a point of the upper layer's input map is taken to be the lower
      layer's activation at the same image position. This ignores their own (small, fixed)
      receptive fields, as the paper's figure does. A stride change between the two (e.g.
      res4's last conv to res5's first in a non-dilated ResNet) goes through image pixels:
      input-map point ``p`` of the upper layer is image ``p * s_in`` and lower-map point
      ``p * s_in / s_out_lower``.
    * A point lands between the lower layer's output pixels, so that layer's offsets (and
      mask) are read there by bilinear interpolation of its offset field. Points outside the
      map (the upper layer sampling into the zero padding) read the field at the nearest
      border position (clamped coordinates).
    * Offset groups: one group is followed (``group=0`` by default: a sampling grid the
      network actually uses, for 1/G of its input channels), or ``group="mean"`` averages the
      groups' offsets and masks (a summary, not a grid any channel uses).
    * Modulated (v2) layers: each composed point carries the product of the masks of the
      taps along its path (1 for v1), used by the drawings as point size/opacity.
"""
from dataclasses import dataclass
from typing import List, Sequence, Tuple, Union

import torch

from dcn_det.analysis.capture import DeformLayerRecord

Group = Union[int, str]

# The most composed points per unit that compose_sampling_points builds (9**5 = 59049).
MAX_POINTS_PER_UNIT = 9 ** 5


def bilinear_sample(field: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bilinear interpolation of ``field`` at fractional positions, border-clamped.

    Args:
        field: ``(C, H, W)``.
        y, x: same shape ``S``; row and column in pixels of ``field`` (pixel centres are
            integers). Positions outside ``[0, H-1] x [0, W-1]`` are clamped to it.

    Returns:
        ``S + (C,)`` values.
    """
    c, h, w = field.shape
    y = y.to(field.dtype).clamp(0, h - 1)
    x = x.to(field.dtype).clamp(0, w - 1)
    y0 = y.floor().long().clamp(max=max(h - 2, 0))
    x0 = x.floor().long().clamp(max=max(w - 2, 0))
    y1 = (y0 + 1).clamp(max=h - 1)
    x1 = (x0 + 1).clamp(max=w - 1)
    ly, lx = (y - y0.to(y.dtype))[..., None], (x - x0.to(x.dtype))[..., None]
    flat = field.reshape(c, h * w).t()  # (H*W, C)

    def at(yy, xx):
        return flat[(yy * w + xx).reshape(-1)].reshape(*yy.shape, c)

    return ((1 - ly) * (1 - lx) * at(y0, x0) + (1 - ly) * lx * at(y0, x1)
            + ly * (1 - lx) * at(y1, x0) + ly * lx * at(y1, x1))


def _group_fields(record: DeformLayerRecord, group: Group, batch_index: int):
    """``(K, 2, H_out, W_out)`` offsets (dy, dx) and ``(K, H_out, W_out)`` mask of one group."""
    n = record.offset.shape[0]
    if not 0 <= batch_index < n:
        raise ValueError(f"batch_index must be in [0, {n}) for layer {record.name!r}, "
                         f"got {batch_index!r}")
    g, k = record.offset_groups, record.num_taps
    ho, wo = record.output_hw
    off = record.offset[batch_index].reshape(g, k, 2, ho, wo)
    mask = (record.mask[batch_index].reshape(g, k, ho, wo) if record.mask is not None
            else off.new_ones(g, k, ho, wo))
    if group == "mean":
        return off.mean(0), mask.mean(0)
    if isinstance(group, bool) or not isinstance(group, int) or not 0 <= group < g:
        raise ValueError(f"group must be 'mean' or an int in [0, {g}) (offset groups of layer "
                         f"{record.name!r}), got {group!r}")
    return off[group], mask[group]


def sampling_locations(record: DeformLayerRecord, positions: torch.Tensor, *, group: Group = 0,
                       batch_index: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Where a deformable conv samples its input for output positions, and with what mask.

    Args:
        record: the layer (see :class:`DeformLayerRecord`).
        positions: ``(..., 2)`` output-map positions ``(x, y)`` in output-map pixels; integer
            positions are the layer's units, fractional ones read the offset field (and mask)
            by bilinear interpolation (border-clamped).
        group: offset group to follow, or ``"mean"`` (module docstring).
        batch_index: image of the recorded batch.

    Returns:
        ``points (..., K, 2)``: ``(x, y)`` of each tap ``k = u*kw + v`` in INPUT-map pixels,
        ``x = j*stride_w - pad_w + v*dil_w + dx``, ``y = i*stride_h - pad_h + u*dil_h + dy``
        (multiply by ``record.input_stride`` for image pixels); ``mask (..., K)`` (ones for
        a v1 conv). ``compose_sampling_points([record], units_xy)`` gives the same points of
        the units nearest to image points, in image pixels.
    """
    if positions.shape[-1] != 2:
        raise ValueError(f"positions must have shape (..., 2) = (x, y), got "
                         f"{tuple(positions.shape)}")
    off, mask = _group_fields(record, group, batch_index)
    k = record.num_taps
    ho, wo = record.output_hw
    pos = positions.to(torch.float32)
    px, py = pos[..., 0], pos[..., 1]
    fields = torch.cat((off.reshape(2 * k, ho, wo), mask), 0)  # (3K, H_out, W_out)
    vals = bilinear_sample(fields, py, px)  # (..., 3K)
    dyx = vals[..., :2 * k].reshape(*pos.shape[:-1], k, 2)
    m = vals[..., 2 * k:]
    kh, kw = record.kernel_size
    u = torch.arange(kh, dtype=torch.float32).repeat_interleave(kw)  # row of tap k
    v = torch.arange(kw, dtype=torch.float32).repeat(kh)  # column of tap k
    (sh, sw), (ph, pw), (dh, dw) = record.stride, record.padding, record.dilation
    y = py[..., None] * sh - ph + u * dh + dyx[..., 0]
    x = px[..., None] * sw - pw + v * dw + dyx[..., 1]
    return torch.stack((x, y), -1), m


def chain_indices(names: Sequence[str],
                  chain: Union[None, str, Sequence[str]] = None) -> List[int]:
    """Indices into ``names`` (deformable layers in forward order) of the chain to compose.

    Args:
        names: every deformable layer's name, in forward order.
        chain: ``None`` = the layers of the last deformable stage (names ``resN.*``; all
            layers when the names carry no stage), ``"all"`` = every layer, or a list of
            names that must be consecutive in ``names`` (given in any order).

    Returns:
        Increasing indices (bottom to top).

    Raises:
        ValueError: no layers, unknown names, or names that skip a deformable layer.
    """
    names = list(names)
    if not names:
        raise ValueError("the model has no deformable convolution: no chain to compose")
    if chain is None:
        stages = [n.split(".", 1)[0] if n.startswith("res") else None for n in names]
        return [i for i, s in enumerate(stages) if s == stages[-1]]
    if chain == "all":
        return list(range(len(names)))
    if isinstance(chain, str):
        raise ValueError(f"chain must be None, 'all' or a list of layer names, got {chain!r}")
    unknown = [c for c in chain if c not in names]
    if unknown or not chain:
        raise ValueError(f"chain must name deformable layers among {names}, got {list(chain)}")
    idx = sorted({names.index(c) for c in chain})
    if idx != list(range(idx[0], idx[-1] + 1)):
        raise ValueError(f"chain must be contiguous (no deformable layer skipped) in {names}, "
                         f"got {list(chain)}")
    return idx


def select_chain(records: Sequence[DeformLayerRecord],
                 chain: Union[None, str, Sequence[str]] = None) -> List[DeformLayerRecord]:
    """The contiguous run of recorded deformable layers to compose, bottom to top.

    Args:
        records: every deformable layer in forward order.
        chain: see :func:`chain_indices`.
    """
    records = list(records)
    return [records[i] for i in chain_indices([r.name for r in records], chain)]


@dataclass
class ComposedPoints:
    """Sampling points of units of the top layer composed down a chain of deformable layers.

    Level ``l`` (0 = the top layer) holds ``K**(l+1)`` points per unit: where layer
    ``layers[l]`` samples when reached through the layers above it.

    Attributes:
        layers: layer names, top first (``layers[l]`` made level ``l``).
        units: ``(U, 2)`` the units' positions ``(x, y)`` in input-image pixels (the top
            layer's output pixel ``(i, j)`` is image ``(j*s, i*s)``, ``s`` its output stride).
        points: per level, ``(U, K**(l+1), 2)`` ``(x, y)`` in input-image pixels.
        weights: per level, ``(U, K**(l+1))`` product of the masks along each point's path
            (all ones for v1 layers).
    """

    layers: List[str]
    units: torch.Tensor
    points: List[torch.Tensor]
    weights: List[torch.Tensor]

    def scaled(self, sx: float, sy: float) -> "ComposedPoints":
        """The same points with x multiplied by ``sx`` and y by ``sy`` (e.g. to the original
        image's pixels: ``sx = W_orig / W_input``)."""
        s = torch.tensor([sx, sy], dtype=torch.float32)
        return ComposedPoints(self.layers, self.units * s, [p * s for p in self.points],
                              list(self.weights))


def compose_sampling_points(records: Sequence[DeformLayerRecord], units_xy, *,
                            group: Group = 0, batch_index: int = 0,
                            max_points: int = MAX_POINTS_PER_UNIT) -> ComposedPoints:
    """Composes sampling locations through a chain of deformable layers (paper Figure 5).

    Start: each requested image point becomes the nearest unit of the top layer's output
    map (clamped to the map). Its ``K`` sampling points (read at the integer unit) lie in
    that layer's input map; each is mapped through image pixels into the next lower layer's
    output map (layers in between are position-preserving, see the module docstring), where
    that layer's offsets are read at the fractional position by bilinear interpolation and
    the point expands into ``K`` points; and so on down the chain.

    Args:
        records: the chain, bottom to top (e.g. ``select_chain(cap.ordered_records())``).
        units_xy: ``(U, 2)`` points ``(x, y)`` in input-image pixels (tensor or nested list).
        group: offset group to follow in every layer, or ``"mean"``.
        batch_index: image of the recorded batch.
        max_points: refuse chains giving more points per unit than this (``K**len(chain)``).

    Returns:
        A :class:`ComposedPoints`.

    Raises:
        ValueError: empty chain, bad ``units_xy`` or too many points.
    """
    records = list(records)
    if not records:
        raise ValueError("records (the chain) must hold at least one deformable layer")
    total = 1
    for r in records:
        total *= r.num_taps
    if total > max_points:
        raise ValueError(f"a chain of {len(records)} layers gives {total} points per unit, more "
                         f"than max_points={max_points}; choose a shorter chain")
    units = torch.as_tensor(units_xy, dtype=torch.float32).reshape(-1, 2) \
        if not isinstance(units_xy, torch.Tensor) else units_xy.float().reshape(-1, 2)
    if units.numel() == 0 or not torch.isfinite(units).all():
        raise ValueError(f"units_xy must be a non-empty (U, 2) list of finite (x, y) image "
                         f"points, got {tuple(units.shape)}")
    top = records[-1]
    s_top = top.output_stride
    ho, wo = top.output_hw
    pos = torch.stack(((units[:, 0] / s_top).round().clamp(0, wo - 1),
                       (units[:, 1] / s_top).round().clamp(0, ho - 1)), -1)[:, None]  # (U, 1, 2)
    unit_img = pos[:, 0] * s_top
    weight = torch.ones(pos.shape[:2])
    levels, weights, names = [], [], []
    for level, rec in enumerate(reversed(records)):
        pts, m = sampling_locations(rec, pos, group=group, batch_index=batch_index)
        u = pts.shape[0]
        pts_img = (pts * rec.input_stride).reshape(u, -1, 2)
        weight = (weight[..., None] * m).reshape(u, -1)
        levels.append(pts_img)
        weights.append(weight)
        names.append(rec.name)
        if level + 1 < len(records):
            lower = records[len(records) - 2 - level]
            pos = pts_img / lower.output_stride
    return ComposedPoints(names, unit_img, levels, weights)
