"""GPU benchmark: our deform_conv2d vs torchvision's vs dense conv2d, and the other ops.

Usage (on a CUDA machine; torchvision optional)::

    python benchmarks/ops_cuda.py [--dtype float32|float16] [--repeats 20] [--output FILE]

Shapes are the 3x3 convs of a ResNet at a 600x1000 input: res3 (C=128, 75x125, stride 8,
modulated, 1 offset group: DCNv2), res4 (C=256, 38x63, modulated, 1 offset group: DCNv2) and
res5 (C=512, 38x63, dilation 2, v1 with 4 offset groups: the DCN paper), batch 1, 2 and 8.
Times are CUDA-event medians in milliseconds; inputs of all three share one dtype.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import fwd_bwd  # noqa: E402
from dcn_det.ops import deform_conv2d, deform_psroi_pool, nms, roi_align  # noqa: E402

SHAPES = {  # name: (C, H, W, dilation, offset_groups, modulated)
    "res3": (128, 75, 125, 1, 1, True),
    "res4": (256, 38, 63, 1, 1, True),
    "res5": (512, 38, 63, 2, 4, False),
}


def _tv():
    try:
        import torchvision.ops as tv
        return tv
    except Exception:  # noqa: BLE001 - optional reference
        return None


def cuda_ms(fn, repeats: int, warmup: int = 3) -> float:
    """Median CUDA-event time of ``fn`` in milliseconds."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[len(times) // 2]


def conv_rows(dtype, repeats):
    tv = _tv()
    rows = []
    for name, (c, h, w, dil, og, modulated) in SHAPES.items():
        for n in (1, 2, 8):
            x = torch.randn(n, c, h, w, device="cuda", dtype=dtype, requires_grad=True)
            wt = (torch.randn(c, c, 3, 3, device="cuda", dtype=dtype) * 0.02).requires_grad_()
            off = torch.randn(n, 2 * og * 9, h, w, device="cuda", dtype=dtype, requires_grad=True)
            mask = torch.rand(n, og * 9, h, w, device="cuda", dtype=dtype,
                              requires_grad=True) if modulated else None
            leaves = [x, wt, off] + ([mask] if modulated else [])
            kw = dict(padding=dil, dilation=dil, mask=mask)
            fns = {"ours": lambda: deform_conv2d(x, off, wt, None, **kw),
                   "dense": lambda: F.conv2d(x, wt, None, padding=dil, dilation=dil)}
            if tv is not None:
                fns["torchvision"] = lambda: tv.deform_conv2d(x, off, wt, None, **kw)
            row = {"op": "deform_conv2d", "shape": name, "batch": n, "dtype": str(dtype)[6:]}
            for key, f in fns.items():
                with torch.no_grad():
                    row[f"{key}_fwd"] = cuda_ms(f, repeats)
                row[f"{key}_fwdbwd"] = cuda_ms(fwd_bwd(f, leaves), repeats)
            rows.append(row)
    return rows


def other_rows(dtype, repeats):
    tv = _tv()
    rows = []
    g = torch.Generator(device="cuda").manual_seed(0)
    k1 = 81
    x = torch.randn(1, k1 * 49, 38, 63, device="cuda", dtype=dtype, generator=g, requires_grad=True)
    xy = torch.rand(300, 2, device="cuda", generator=g) * torch.tensor([900.0, 500.0], device="cuda")
    rois = torch.cat([torch.zeros(300, 1, device="cuda"), xy, xy + 16 + torch.rand(
        300, 2, device="cuda", generator=g) * 300], 1).to(dtype)
    off = torch.randn(300, 2 * k1, 7, 7, device="cuda", dtype=dtype, generator=g, requires_grad=True)
    f = lambda: deform_psroi_pool(x, rois, off, 1 / 16, k1, 7, 7, 7, 4, 0.1)  # noqa: E731
    with torch.no_grad():
        fwd = cuda_ms(f, repeats)
    rows.append({"op": "deform_psroi_pool", "shape": "R-FCN K+1=81, 300 RoIs", "batch": 1,
                 "dtype": str(dtype)[6:], "ours_fwd": fwd,
                 "ours_fwdbwd": cuda_ms(fwd_bwd(f, [x, off]), repeats)})
    feat = torch.randn(1, 1024, 38, 63, device="cuda", dtype=dtype, requires_grad=True)
    row = {"op": "roi_align", "shape": "1024ch 38x63, 300 RoIs, 7x7, sr 2", "batch": 1,
           "dtype": str(dtype)[6:]}
    fns = {"ours": lambda: roi_align(feat, rois, 7, 1 / 16, 2, True)}
    if tv is not None:
        fns["torchvision"] = lambda: tv.roi_align(feat, rois, 7, 1 / 16, 2, True)
    for key, fn in fns.items():
        with torch.no_grad():
            row[f"{key}_fwd"] = cuda_ms(fn, repeats)
        row[f"{key}_fwdbwd"] = cuda_ms(fwd_bwd(fn, [feat]), repeats)
    rows.append(row)
    boxes = torch.rand(6000, 4, device="cuda") * 500
    boxes[:, 2:] += boxes[:, :2] + 1
    scores = torch.rand(6000, device="cuda")
    row = {"op": "nms", "shape": "6000 boxes, IoU 0.7", "batch": 1, "dtype": "float32",
           "ours_fwd": cuda_ms(lambda: nms(boxes, scores, 0.7), repeats)}
    if tv is not None:
        row["torchvision_fwd"] = cuda_ms(lambda: tv.nms(boxes, scores, 0.7), repeats)
    rows.append(row)
    return rows


def print_table(rows):
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    hdr = (f"{'op':<18}{'shape':<8}{'N':>3} {'dtype':<8}{'ours fwd':>9}{'tv fwd':>9}{'dense fwd':>10}"
           f"{'ours f+b':>9}{'tv f+b':>9}{'dense f+b':>10}{'tv/ours f+b':>12}{'ours/dense fwd':>15}")
    print(hdr)
    for r in rows:
        def g(k):
            v = r.get(k)
            return f"{v:9.3f}" if v is not None else f"{'-':>9}"
        ratio = (f"{r['torchvision_fwdbwd'] / r['ours_fwdbwd']:12.2f}"
                 if r.get("torchvision_fwdbwd") and r.get("ours_fwdbwd") else f"{'-':>12}")
        dense = (f"{r['ours_fwd'] / r['dense_fwd']:15.2f}" if r.get("dense_fwd") else f"{'-':>15}")
        print(f"{r['op']:<18}{str(r['shape'])[:7]:<8}{r['batch']:>3} {r['dtype']:<8}"
              f"{g('ours_fwd')}{g('torchvision_fwd')} {g('dense_fwd')}{g('ours_fwdbwd')}"
              f"{g('torchvision_fwdbwd')} {g('dense_fwdbwd')}{ratio}{dense}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("benchmarks/ops_cuda.py needs a CUDA device")
    torch.backends.cudnn.benchmark = True
    dtype = getattr(torch, args.dtype)
    rows = conv_rows(dtype, args.repeats) + other_rows(dtype, args.repeats)
    print_table(rows)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
