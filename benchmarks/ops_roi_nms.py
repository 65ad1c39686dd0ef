"""roi_align and nms against their pure-PyTorch references, and batched_nms with many
categories against torchvision's (collected by ``benchmarks/ops.py``).

``cases(device, repeats) -> list[dict]``: one row per case with the op, the shape, the pass
("fwd" or "fwd+bwd"), the median times of ours and of the reference (or of torchvision,
``tv_ms``, when it imports) in milliseconds.
"""
import torch

from benchmarks import batched_nms as nms_cases
from benchmarks.timing import time_ms
from dcn_det.ops import batched_nms, nms, roi_align
from dcn_det.ops.reference import nms_ref, roi_align_ref


def _row(op, shape, mode, ours, ref, device, repeats):
    """Times ``ours`` and ``ref`` interleaved; a row in the format of ``benchmarks/ops.py``."""
    t_ours, t_ref = time_ms([ours, ref], device, repeats, warmup=1)
    return dict(op=op, shape=shape, mode=mode, ours_ms=t_ours, ref_ms=t_ref,
                ref_over_ours=t_ref / t_ours)


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
    return [_row("roi_align", shape, "fwd", fwd(roi_align), fwd(roi_align_ref), device,
                 ref_repeats),
            _row("roi_align", shape, "fwd+bwd", fwd_bwd(roi_align), fwd_bwd(roi_align_ref),
                 device, ref_repeats)]


def bench_nms(device: str, repeats: int) -> list:
    """RPN-style NMS: 6000 random boxes in a 1000x600 image at IoU 0.7."""
    gen = torch.Generator().manual_seed(0)
    boxes = _random_boxes(6000, 1000, 600, gen, device)
    scores = torch.rand(6000, generator=gen).to(device)
    kept = nms(boxes, scores, 0.7).numel()
    return [_row("nms", f"6000 boxes -> {kept} kept, IoU 0.7", "fwd",
                 lambda: nms(boxes, scores, 0.7), lambda: nms_ref(boxes, scores, 0.7), device,
                 max(1, repeats // 2))]


def bench_batched_nms(device: str, repeats: int) -> list:
    """batched_nms at 1000/4000/10000 boxes in 1/20/80 categories, IoU 0.5 (the cases of
    ``benchmarks/batched_nms.py``); torchvision's time and tv/ours when torchvision imports."""
    tv = nms_cases.torchvision_batched_nms()
    rows = []
    for n, c in nms_cases.all_cases():
        boxes, scores, idxs = (t.to(device) for t in nms_cases.make_case(n, c))
        kept = batched_nms(boxes, scores, idxs, nms_cases.IOU).numel()
        fns = [lambda: batched_nms(boxes, scores, idxs, nms_cases.IOU)]
        if tv is not None:
            fns.append(lambda: tv(boxes, scores, idxs, nms_cases.IOU))
        times = time_ms(fns, device, repeats, warmup=1)
        row = dict(op="batched_nms", shape=f"{n} boxes {c} classes -> {kept} kept, IoU 0.5",
                   mode="fwd", ours_ms=times[0])
        if tv is not None:
            row.update(tv_ms=times[1], tv_over_ours=times[1] / times[0])
        rows.append(row)
    return rows


def cases(device: str, repeats: int = 5) -> list:
    """All rows of this file's benchmarks on ``device``."""
    return (bench_roi_align(device, repeats) + bench_nms(device, repeats)
            + bench_batched_nms(device, repeats))
