"""Times roi_align and nms against their pure-PyTorch references.

Usage::

    python benchmarks/ops_roi_nms.py [--device cpu|cuda] [--repeats 5]

``cases(device) -> list[dict]`` is what ``benchmarks/ops.py`` collects: one row per case with
the op, the shape, the pass ("fwd" or "fwd+bwd"), the median times of ours and of the
reference in milliseconds, and the speed-up (reference / ours).
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dcn_det.ops import nms, roi_align  # noqa: E402
from dcn_det.ops.reference import nms_ref, roi_align_ref  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_ms(fn, device: str, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _row(op, shape, pass_, ours_ms, ref_ms):
    return {"op": op, "shape": shape, "pass": pass_, "ours_ms": round(ours_ms, 3),
            "reference_ms": round(ref_ms, 3), "speedup": round(ref_ms / ours_ms, 1)}


def _random_boxes(num, img_w, img_h, gen, device):
    """(num, 4) XYXY boxes inside an img_w x img_h image, 8 to 60% of its size."""
    xy = torch.rand(num, 2, generator=gen) * torch.tensor([img_w, img_h]) * 0.9
    wh = (torch.rand(num, 2, generator=gen) * 0.52 + 0.08) * torch.tensor([img_w, img_h])
    return torch.cat([xy, xy + wh], dim=1).to(device)


def bench_roi_align(device: str, repeats: int) -> list:
    """The R-FCN/Faster R-CNN res4 case: stride-16 map of a 600x1000 image, 300 RoIs, 7x7."""
    gen = torch.Generator().manual_seed(0)
    n, c, h, w = 1, 1024, 38, 63
    x = torch.randn(n, c, h, w, generator=gen).to(device).requires_grad_()
    boxes = _random_boxes(300, w * 16, h * 16, gen, device)
    rois = torch.cat([torch.zeros(300, 1, device=device), boxes], dim=1)
    args = ((7, 7), 1 / 16, 2, True)
    shape = f"({n},{c},{h},{w}) 300 RoIs 7x7 sr2"

    def fwd(fn):
        def run():
            with torch.no_grad():
                fn(x, rois, *args)
        return run

    def fwd_bwd(fn):
        def run():
            x.grad = None
            fn(x, rois, *args).sum().backward()
        return run

    # The reference is slow (its backward writes a full-size input gradient per RoI), so it
    # is timed fewer times and without a warm-up call.
    ref_repeats = max(1, repeats // 2)
    return [
        _row("roi_align", shape, "fwd", _time_ms(fwd(roi_align), device, repeats),
             _time_ms(fwd(roi_align_ref), device, ref_repeats)),
        _row("roi_align", shape, "fwd+bwd", _time_ms(fwd_bwd(roi_align), device, repeats),
             _time_ms(fwd_bwd(roi_align_ref), device, ref_repeats, warmup=0)),
    ]


def bench_nms(device: str, repeats: int) -> list:
    """RPN-style NMS: 6000 random boxes in a 1000x600 image at IoU 0.7."""
    gen = torch.Generator().manual_seed(0)
    boxes = _random_boxes(6000, 1000, 600, gen, device)
    scores = torch.rand(6000, generator=gen).to(device)
    kept = nms(boxes, scores, 0.7).numel()
    return [_row("nms", f"6000 boxes -> {kept} kept, IoU 0.7", "fwd",
                 _time_ms(lambda: nms(boxes, scores, 0.7), device, repeats),
                 _time_ms(lambda: nms_ref(boxes, scores, 0.7), device, max(1, repeats // 2)))]


def cases(device: str, repeats: int = 5) -> list:
    """All rows of this file's benchmarks on ``device``."""
    return bench_roi_align(device, repeats) + bench_nms(device, repeats)


def format_table(rows: list) -> str:
    """A plain-text table of ``rows``."""
    header = f"{'op':<10} {'shape':<34} {'pass':<8} {'ours ms':>10} {'ref ms':>10} {'speedup':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['op']:<10} {r['shape']:<34} {r['pass']:<8} {r['ours_ms']:>10.2f} "
                     f"{r['reference_ms']:>10.2f} {r['speedup']:>7.1f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(format_table(cases(args.device, args.repeats)))


if __name__ == "__main__":
    main()
