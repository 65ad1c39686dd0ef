"""Effective dilation of a deformable filter (the paper's Table 2).

For one filter (one output location, one offset group) with sampling locations ``p_k`` on a
``kh x kw`` grid, the effective dilation is the mean distance between all pairs of
horizontally or vertically adjacent taps (12 pairs for 3x3), in pixels of the layer's INPUT
map. With zero offsets a horizontal pair is ``dil_w`` apart and a vertical one ``dil_h``, so
for equal dilations it equals the dilation. Masks (v2) are not used: the distance is a
property of where the filter samples, not of how much each sample counts.
"""
from typing import Optional

import torch

from dcn_det.analysis.capture import DeformLayerRecord


def effective_dilation(record: DeformLayerRecord, *, group: Optional[int] = None) -> torch.Tensor:
    """Effective dilation of every filter of a recorded deformable layer.

    Args:
        record: the layer and its offsets for a batch.
        group: ``None`` = every offset group, else only that group.

    Returns:
        ``(N, G, H_out, W_out)`` (``G = 1`` when ``group`` is given) float32 mean adjacent-tap
        distance in input-map pixels.

    Raises:
        ValueError: a 1x1 kernel (no adjacent taps) or a bad ``group``.
    """
    kh, kw = record.kernel_size
    if kh * kw < 2:
        raise ValueError(f"layer {record.name!r} has a {kh}x{kw} kernel: no adjacent taps, "
                         "so no effective dilation")
    n, _, ho, wo = record.offset.shape
    g = record.offset_groups
    off = record.offset.reshape(n, g, kh, kw, 2, ho, wo)
    if group is not None:
        if isinstance(group, bool) or not isinstance(group, int) or not 0 <= group < g:
            raise ValueError(f"group must be None or an int in [0, {g}) for layer "
                             f"{record.name!r}, got {group!r}")
        off = off[:, group:group + 1]
    dh, dw = record.dilation
    # Tap (u, v) sits at (u*dh + dy, v*dw + dx) plus the location's base, which cancels in
    # differences.
    u = torch.arange(kh, dtype=off.dtype).view(kh, 1, 1, 1) * dh
    v = torch.arange(kw, dtype=off.dtype).view(1, kw, 1, 1) * dw
    y = off[:, :, :, :, 0] + u
    x = off[:, :, :, :, 1] + v
    dists = []
    if kw > 1:  # horizontal neighbours (u, v) - (u, v+1)
        dists.append(torch.hypot(y[:, :, :, 1:] - y[:, :, :, :-1],
                                 x[:, :, :, 1:] - x[:, :, :, :-1]).flatten(2, 3))
    if kh > 1:  # vertical neighbours (u, v) - (u+1, v)
        dists.append(torch.hypot(y[:, :, 1:] - y[:, :, :-1], x[:, :, 1:] - x[:, :, :-1])
                     .flatten(2, 3))
    return torch.cat(dists, 2).mean(2)
