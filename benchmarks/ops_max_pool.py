"""Benchmark of deform_max_pool2d against F.max_pool2d on the ResNet stem's pool.

``cases(device, repeats)`` returns one row per (case, pass); ``benchmarks/ops.py`` prints them.

The shape is the stem of a 400x512 image: conv1 (stride 2) gives N=2, C=64, 200x256, pooled
3x3 / stride 2 / padding 1 to 100x128. With zero offsets the op computes exactly
``F.max_pool2d`` (the "dense" column), so ours/dense is the price of the deformable sampling
(bilinear reads, the argmax for the backward); random offsets (std 1 pixel) add none.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F

from benchmarks.timing import fwd_bwd, time_ms
from dcn_det.ops import deform_max_pool2d

STEM = (2, 64, 200, 256)  # N, C, H, W


def cases(device, repeats: int = 7) -> List[Dict]:
    """Times ours vs ``F.max_pool2d``; one dict row per (offsets, pass).

    Args:
        device: ``torch.device`` or string to run on.
        repeats: timed rounds per measurement (the median is reported).

    Returns:
        Rows ``{"op", "shape", "mode", "ours_ms", "dense_ms"}`` (the format of
        ``benchmarks/ops.py``, which prints them).
    """
    device = str(device)
    n, c, h, w = STEM
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=gen).to(device).requires_grad_()
    h_out, w_out = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    rows = []
    for name, std in (("zero offsets", 0.0), ("random offsets", 1.0)):
        offset = (torch.randn(n, 18, h_out, w_out, generator=gen) * std).to(device)
        offset.requires_grad_()

        def ours(offset=offset):
            return deform_max_pool2d(x, offset, 3, 2, 1)

        def dense():
            return F.max_pool2d(x, 3, 2, 1)

        shape = f"stem {n}x{c}x{h}x{w} k3s2p1 {name}"
        for mode, fns in (("fwd", (ours, dense)),
                          ("fwd+bwd", (fwd_bwd(ours, [x, offset]), fwd_bwd(dense, [x])))):
            with torch.set_grad_enabled(mode != "fwd"):
                t_ours, t_dense = time_ms(list(fns), device, repeats)
            rows.append(dict(op="deform_max_pool2d", shape=shape, mode=mode, ours_ms=t_ours,
                             dense_ms=t_dense))
    return rows
