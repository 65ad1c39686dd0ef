"""Times the native ops against their dense ceilings and pure-PyTorch references.

Usage::

    python benchmarks/ops.py [--device cpu|cuda] [--repeats 7] [--output out/bench_ops.json]

Each benchmark case is a function ``case(device, repeats) -> list[dict]``; a row holds the op,
the shape, the pass ("fwd" or "fwd+bwd") and times in milliseconds. Add a case by appending a
function to ``CASES``. The table is printed with ratios and written as JSON with the machine.
"""
import argparse
import json
import os
import platform
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import ops_max_pool, ops_psroi, ops_roi_nms  # noqa: E402
from benchmarks.timing import fwd_bwd, time_ms  # noqa: E402
from dcn_det.ops import deform_conv2d  # noqa: E402
from dcn_det.ops.reference import deform_conv2d_ref  # noqa: E402


# ---------------------------------------------------------------------------------------------
# deform_conv2d
# ---------------------------------------------------------------------------------------------

REF_REPEATS = 3  # rounds for the slow pure-PyTorch reference

DEFORM_CONV_SHAPES = {
    # name: (N, C_in, C_out, H, W, k, padding, dilation, offset groups)
    "res5": (1, 512, 512, 38, 50, 3, 2, 2, 4),
    "res4": (1, 256, 256, 50, 68, 3, 1, 1, 4),
}


def bench_deform_conv2d(device: str, repeats: int) -> list:
    """deform_conv2d vs F.conv2d (dense ceiling) and the reference at the paper's shapes."""
    rows = []
    for name, (n, c_in, c_out, h, w, k, pad, dil, og) in DEFORM_CONV_SHAPES.items():
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(n, c_in, h, w, generator=gen).to(device).requires_grad_()
        weight = (torch.randn(c_out, c_in, k, k, generator=gen) * 0.01).to(device)
        weight.requires_grad_()
        bias = torch.zeros(c_out, device=device, requires_grad=True)
        h_out = h + 2 * pad - dil * (k - 1)  # stride 1
        w_out = w + 2 * pad - dil * (k - 1)
        offset = torch.randn(n, 2 * og * k * k, h_out, w_out, generator=gen).to(device)
        offset.requires_grad_()

        def ours():
            return deform_conv2d(x, offset, weight, bias, padding=pad, dilation=dil)

        def dense():
            return F.conv2d(x, weight, bias, padding=pad, dilation=dil)

        def ref():
            return deform_conv2d_ref(x, offset, weight, bias, padding=pad, dilation=dil)

        shape = f"{name} N={n} C={c_in}->{c_out} {h}x{w} k{k} p{pad} d{dil} G{og}"
        # The reference is slow: it is timed in a few rounds interleaved with ours, and
        # ref/ours is taken from those rounds so load changes cancel.
        fwd = (ours, dense, ref)
        both = (fwd_bwd(ours, [x, offset, weight, bias]), fwd_bwd(dense, [x, weight, bias]),
                fwd_bwd(ref, [x, offset, weight, bias]))
        for mode, (f_ours, f_dense, f_ref) in (("fwd", fwd), ("fwd+bwd", both)):
            with torch.set_grad_enabled(mode != "fwd"):
                t_ours, t_dense = time_ms([f_ours, f_dense], device, repeats)
                t_ours_r, t_ref = time_ms([f_ours, f_ref], device, REF_REPEATS, warmup=1)
            rows.append(dict(op="deform_conv2d", shape=shape, mode=mode, ours_ms=t_ours,
                             dense_ms=t_dense, ref_ms=t_ref, ref_over_ours=t_ref / t_ours_r))
    return rows


CASES = [bench_deform_conv2d, ops_max_pool.cases, ops_psroi.cases, ops_roi_nms.cases]


def _fmt(v, spec):
    return format(v, spec) if v is not None else "-"


def _ms(v):
    """A time in ms: two decimals under 10 ms (the NMS rows), one above."""
    return "-" if v is None else format(v, ".2f" if v < 10 else ".1f")


def print_table(rows: list) -> None:
    """Prints the rows with the ratios ours/dense and ref/ours (from interleaved rounds), and
    torchvision's time and tv/ours when any row has one (torchvision imported)."""
    with_tv = any(r.get("tv_ms") is not None for r in rows)
    head = (f"{'op':<18} {'shape':<44} {'mode':<8} {'ours ms':>9} {'dense ms':>9} "
            f"{'ref ms':>9} {'ours/dense':>10} {'ref/ours':>9}")
    if with_tv:
        head += f" {'tv ms':>9} {'tv/ours':>8}"
    print(head)
    print("-" * len(head))
    for r in rows:
        dense, ref = r.get("dense_ms"), r.get("ref_ms")
        ref_ratio = r.get("ref_over_ours", ref / r["ours_ms"] if ref else None)
        line = (f"{r['op']:<18} {r['shape']:<44} {r['mode']:<8} {_ms(r['ours_ms']):>9} "
                f"{_ms(dense):>9} {_ms(ref):>9} "
                f"{_fmt(r['ours_ms'] / dense if dense else None, '10.2f'):>10} "
                f"{_fmt(ref_ratio, '9.1f'):>9}")
        if with_tv:
            line += f" {_ms(r.get('tv_ms')):>9} {_fmt(r.get('tv_over_ours'), '8.2f'):>8}"
        print(line)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement")
    parser.add_argument("--output", default=None, help="write the rows as JSON to this path")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    machine = dict(platform=platform.platform(), processor=platform.processor() or
                   platform.machine(), cpu_count=os.cpu_count(),
                   torch_threads=torch.get_num_threads(), torch=torch.__version__,
                   device=args.device)
    if args.device.startswith("cuda"):
        machine["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    print(f"machine: {machine}")
    rows = []
    for case in CASES:
        rows += case(args.device, args.repeats)
    print_table(rows)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(dict(machine=machine, rows=rows), f, indent=2)
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
