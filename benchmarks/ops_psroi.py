"""Benchmark of deform_psroi_pool against its pure-PyTorch reference on R-FCN's shapes.

``cases(device)`` returns one row per (case, pass); run this file to print them as a table:

    python benchmarks/ops_psroi.py [--device cpu] [--repeat 3] [--json out.json]

Cases follow the official R-FCN head on a ~600x1000 image at stride 16 (a 38x63 map) with 300
RoIs, group_size 7, pooled 7, part 7, sample_per_part 4, trans_std 0.1: the class-score maps
(output_dim 81 = COCO's K+1, per-class offsets) and the class-agnostic box maps (output_dim 8 =
4 coordinates x 2, one offset class).
"""
import argparse
import json
import time
from typing import Callable, Dict, List

import torch

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


def _time(fn: Callable[[], None], device, repeat: int) -> float:
    """Median wall time of ``fn`` in milliseconds after one warm-up call."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def cases(device, repeat: int = 3) -> List[Dict]:
    """Times ours vs the reference; one dict row per (case, pass).

    Args:
        device: ``torch.device`` or string to run on.
        repeat: timed calls per measurement (the median is reported).

    Returns:
        Rows ``{"op", "case", "pass", "device", "ours_ms", "ref_ms", "speedup"}``.
    """
    device = torch.device(device)
    kw = dict(spatial_scale=1 / 16, group_size=7, pooled_size=7, part_size=7,
              sample_per_part=4, trans_std=0.1)
    rows = []
    for name, output_dim, c_off in (("rfcn_cls K+1=81 R=300", 81, 81),
                                    ("rfcn_bbox 8ch R=300", 8, 1)):
        x, rois, offset = _inputs(device, output_dim, c_off)
        for impl_pass in ("forward", "forward+backward"):
            times = {}
            for impl, fn in (("ours", deform_psroi_pool), ("ref", deform_psroi_pool_ref)):
                if impl_pass == "forward":
                    def run(fn=fn):
                        with torch.no_grad():
                            fn(x, rois, offset, output_dim=output_dim, **kw)
                else:
                    xg = x.clone().requires_grad_()
                    og = offset.clone().requires_grad_()

                    def run(fn=fn, xg=xg, og=og):
                        out = fn(xg, rois, og, output_dim=output_dim, **kw)
                        torch.autograd.grad(out.sum(), (xg, og))
                times[impl] = _time(run, device, repeat)
            rows.append({"op": "deform_psroi_pool", "case": name, "pass": impl_pass,
                         "device": str(device), "ours_ms": round(times["ours"], 2),
                         "ref_ms": round(times["ref"], 2),
                         "speedup": round(times["ref"] / times["ours"], 1)})
    return rows


def _print_table(rows: List[Dict]) -> None:
    cols = ["op", "case", "pass", "device", "ours_ms", "ref_ms", "speedup"]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    rows = cases(args.device, repeat=args.repeat)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    _print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
