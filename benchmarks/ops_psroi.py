"""Benchmark of deform_psroi_pool against its pure-PyTorch reference on R-FCN's shapes.

``cases(device, repeats)`` returns one row per (case, pass); ``benchmarks/ops.py`` prints them.

Cases follow the official R-FCN head on a ~600x1000 image at stride 16 (a 38x63 map) with 300
RoIs, group_size 7, pooled 7, part 7, sample_per_part 4, trans_std 0.1: the class-score maps
(output_dim 81 = COCO's K+1, per-class offsets) and the class-agnostic box maps (output_dim 8 =
4 coordinates x 2, one offset class).
"""
from typing import Dict, List

import torch

from benchmarks.timing import time_ms
from dcn_det.ops import deform_psroi_pool
from dcn_det.ops.reference import deform_psroi_pool_ref


def _inputs(device, output_dim, offset_classes, num_rois=300, height=38, width=63, seed=0):
    """Feature map, RoIs in image pixels (stride 16) and offsets, all float32."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, output_dim * 49, height, width, generator=g)
    img_w, img_h = width * 16, height * 16
    xy = torch.rand(num_rois, 2, generator=g) * torch.tensor([img_w, img_h]) * 0.8
    wh = torch.rand(num_rois, 2, generator=g) * torch.tensor([img_w, img_h]) * 0.5 + 16
    rois = torch.cat([torch.zeros(num_rois, 1), xy, xy + wh], dim=1)
    offset = torch.randn(num_rois, 2 * offset_classes, 7, 7, generator=g)
    return x.to(device), rois.to(device), offset.to(device)


def cases(device, repeats: int = 3) -> List[Dict]:
    """Times ours vs the reference; one dict row per (case, pass).

    Args:
        device: ``torch.device`` or string to run on.
        repeats: timed rounds per measurement (the median is reported).

    Returns:
        Rows ``{"op", "shape", "mode", "ours_ms", "ref_ms", "ref_over_ours"}`` (the format of
        ``benchmarks/ops.py``, which prints them).
    """
    device = torch.device(device)
    kw = dict(spatial_scale=1 / 16, group_size=7, pooled_size=7, part_size=7,
              sample_per_part=4, trans_std=0.1)
    rows = []
    for name, output_dim, c_off in (("rfcn_cls K+1=81 R=300", 81, 81),
                                    ("rfcn_bbox 8ch R=300", 8, 1)):
        x, rois, offset = _inputs(device, output_dim, c_off)
        for impl_pass in ("fwd", "fwd+bwd"):
            times = {}
            for impl, fn in (("ours", deform_psroi_pool), ("ref", deform_psroi_pool_ref)):
                if impl_pass == "fwd":
                    def run(fn=fn):
                        with torch.no_grad():
                            fn(x, rois, offset, output_dim=output_dim, **kw)
                else:
                    xg = x.clone().requires_grad_()
                    og = offset.clone().requires_grad_()

                    def run(fn=fn, xg=xg, og=og):
                        out = fn(xg, rois, og, output_dim=output_dim, **kw)
                        torch.autograd.grad(out.sum(), (xg, og))
                times[impl] = run
            t_ours, t_ref = time_ms([times["ours"], times["ref"]], str(device), repeats,
                                    warmup=1)
            rows.append(dict(op="deform_psroi_pool", shape=name, mode=impl_pass,
                             ours_ms=t_ours, ref_ms=t_ref, ref_over_ours=t_ref / t_ours))
    return rows
