"""batched_nms with many categories: ours against torchvision's, on the same boxes.

The cases are 1000, 4000 and 10000 detection-like boxes (random boxes of 8-60% of a 1333x800
image, so that boxes of one category overlap a lot) in 1, 20 and 80 categories, IoU 0.5.
``benchmarks/ops.py`` prints them in the op table (with torchvision's column when torchvision
imports next to dcn_det). Where it cannot (a torchvision built for another torch than the one
our extension is built against), time the two in their own environments on the same saved
boxes; this file imports only torch unless it times ours::

    python benchmarks/batched_nms.py --save out/nms_cases.pt
    python benchmarks/batched_nms.py --load out/nms_cases.pt --impl ours --output out/ours.json
    /path/to/tv-venv/bin/python benchmarks/batched_nms.py --load out/nms_cases.pt \\
        --impl torchvision --output out/tv.json
    python benchmarks/batched_nms.py --compare out/ours.json out/tv.json

Each ``--impl`` run also checks that the kept indices are the ones stored with the cases
(computed by whoever saved them), so the two timings are of the same work.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.timing import time_ms  # noqa: E402  (imports torch only)

SIZES = (1000, 4000, 10000)
CLASSES = (1, 20, 80)
IOU = 0.5


def make_case(num: int, classes: int, seed: int = 0):
    """(boxes (num, 4) float32 XYXY, scores (num,), idxs (num,) int64) for one case."""
    gen = torch.Generator().manual_seed(seed * 1000 + num + classes)
    size = torch.tensor([1333.0, 800.0])
    xy = torch.rand(num, 2, generator=gen) * size * 0.9
    wh = (torch.rand(num, 2, generator=gen) * 0.52 + 0.08) * size
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(num, generator=gen)
    idxs = torch.randint(0, classes, (num,), generator=gen)
    return boxes, scores, idxs


def all_cases():
    return [(n, c) for n in SIZES for c in CLASSES]


def implementation(name: str):
    """The batched_nms function of ``name`` ("ours" or "torchvision")."""
    if name == "ours":
        from dcn_det.ops import batched_nms
        return batched_nms
    from torchvision.ops import batched_nms
    return batched_nms


def torchvision_batched_nms():
    """torchvision's batched_nms when torchvision imports cleanly here, else None."""
    try:
        return implementation("torchvision")
    except Exception:  # noqa: BLE001 - a torchvision built for another torch fails many ways
        return None


def time_saved(path: str, impl: str, repeats: int) -> list:
    fn = implementation(impl)
    saved = torch.load(path, weights_only=True)
    rows = []
    for case in saved["cases"]:
        boxes, scores, idxs = case["boxes"], case["scores"], case["idxs"]
        keep = fn(boxes, scores, idxs, IOU)
        # torchvision's per-class path orders equal scores arbitrarily: compare as sets.
        same = set(keep.tolist()) == set(case["keep"].tolist())
        (ms,) = time_ms([lambda: fn(boxes, scores, idxs, IOU)], "cpu", repeats)
        rows.append(dict(boxes=boxes.size(0), classes=case["classes"], kept=keep.numel(),
                         same_keep=same, ms=ms))
        print(f"{impl:<12} {boxes.size(0):>6} boxes {case['classes']:>3} classes "
              f"{keep.numel():>6} kept {ms:9.3f} ms  same keep as saved: {same}", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", help="write the cases (and their kept indices) to this .pt")
    parser.add_argument("--load", help="time --impl on the cases of this .pt")
    parser.add_argument("--impl", choices=("ours", "torchvision"), default="ours")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads for the timing (default: torch's)")
    parser.add_argument("--output", help="write the timed rows as JSON here")
    parser.add_argument("--compare", nargs=2, metavar=("OURS_JSON", "TV_JSON"),
                        help="print torchvision/ours from two --output files")
    args = parser.parse_args(argv)
    if args.save:
        # The reference keep comes from ours if dcn_det imports here, else from torchvision.
        try:
            fn = implementation("ours")
        except Exception:  # noqa: BLE001
            fn = implementation("torchvision")
        cases = []
        for n, c in all_cases():
            boxes, scores, idxs = make_case(n, c)
            cases.append(dict(boxes=boxes, scores=scores, idxs=idxs, classes=c,
                              keep=fn(boxes, scores, idxs, IOU)))
        os.makedirs(os.path.dirname(os.path.abspath(args.save)), exist_ok=True)
        torch.save(dict(cases=cases, iou=IOU), args.save)
        print(f"wrote {args.save}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.load:
        rows = time_saved(args.load, args.impl, args.repeats)
        if args.output:
            with open(args.output, "w") as f:
                json.dump(dict(impl=args.impl, torch=torch.__version__,
                               threads=torch.get_num_threads(), rows=rows), f, indent=2)
    if args.compare:
        ours, tv = (json.load(open(p))["rows"] for p in args.compare)
        print(f"{'boxes':>6} {'classes':>7} {'kept':>6} {'ours ms':>9} {'tv ms':>9} "
              f"{'tv/ours':>8}")
        for a, b in zip(ours, tv):
            assert (a["boxes"], a["classes"]) == (b["boxes"], b["classes"])
            print(f"{a['boxes']:>6} {a['classes']:>7} {a['kept']:>6} {a['ms']:>9.3f} "
                  f"{b['ms']:>9.3f} {b['ms'] / a['ms']:>8.2f}")


if __name__ == "__main__":
    main()
