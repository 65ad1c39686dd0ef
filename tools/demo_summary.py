#!/usr/bin/env python
"""Prints where `make demo` put everything and how well the demo model did.

    python tools/demo_summary.py --demo-dir out/demo [--min-ap50 60] [--started-at EPOCH_S]

Reads the last line of DIR/test/metrics.json (the COCO evaluation of the exported model) and lists the data,
training run, exported model, drawn images and offset analysis under DIR. Exits 1 when a required file is
missing or when AP50 is below --min-ap50 (the demo's promise), so `make demo` fails loudly.
"""
import argparse
import math
import os
import sys
import time
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (label, path relative to the demo dir, required)
LAYOUT: Tuple[Tuple[str, str, bool], ...] = (
    ("synthetic data (COCO)", "data", True),
    ("training run (config, log, TensorBoard)", "train", True),
    ("final checkpoint", "train/checkpoints/model_final.pth", True),
    ("exported inference file", "model.pth", True),
    ("evaluation of the exported model", "test/metrics.json", True),
    ("its detections (COCO json)", "test/detections.json", False),
    ("drawn detections (PNG)", "vis", True),
    ("sampling points and pooling bins (PNG)", "offsets", True),
    ("effective dilation by object size", "offsets/effective_dilation.json", True),
)
# Folders whose PNG files are listed one by one (and must not be empty).
PNG_FOLDERS = ("vis", "offsets")


def read_metrics(path: str) -> Dict[str, float]:
    """The ``bbox`` block (AP, AP50, ... in percent) of the last evaluation in a COCO
    ``metrics.json`` (one line per evaluation: ``dcn_det.evaluation.metrics_file``).

    Raises:
        ValueError: the file has no ``bbox`` metrics (e.g. a VOC evaluation).
    """
    from dcn_det.evaluation.metrics_file import read_metrics as read_last_line

    metrics = read_last_line(path) or {}
    if "bbox" not in metrics or "AP50" not in metrics["bbox"]:
        raise ValueError(f"{path} has no COCO 'bbox' metrics with AP50 (keys: {sorted(metrics)})")
    return metrics["bbox"]


def summarize(demo_dir: str, min_ap50: float, started_at: float = 0.0) -> Tuple[List[str], bool]:
    """Builds the summary lines; the flag is True when the demo met its promise.

    Args:
        demo_dir: the folder `make demo` wrote (``DEMO_DIR``).
        min_ap50: the AP50 (percent) the model must reach; 0 disables the check.
        started_at: Unix time the demo started, for the elapsed time; 0 = not shown.
    """
    lines, ok = [f"dcn_det demo results in {os.path.abspath(demo_dir)}"], True
    for label, rel, required in LAYOUT:
        path = os.path.join(demo_dir, rel)
        if os.path.exists(path):
            lines.append(f"  {label:<42} {path}")
        elif required:
            lines.append(f"  {label:<42} MISSING: {path}")
            ok = False
    for folder in PNG_FOLDERS:
        folder = os.path.join(demo_dir, folder)
        if os.path.isdir(folder):
            pngs = sorted(n for n in os.listdir(folder) if n.endswith(".png"))
            lines += [f"      {os.path.join(folder, n)}" for n in pngs]
            if not pngs:
                lines.append(f"  no PNG files in {folder}")
                ok = False
    metrics_path = os.path.join(demo_dir, "test", "metrics.json")
    if os.path.isfile(metrics_path):
        bbox = read_metrics(metrics_path)
        lines.append("  COCO box AP on the synthetic val split: "
                     + "  ".join(f"{k} {v:.1f}" for k, v in bbox.items()))
        ap50 = bbox["AP50"]
        if min_ap50 > 0:
            if math.isfinite(ap50) and ap50 >= min_ap50:
                lines.append(f"  AP50 {ap50:.1f} >= {min_ap50:g}: OK")
            else:
                lines.append(f"  AP50 {ap50:.1f} is below the demo's target of {min_ap50:g}")
                ok = False
    if started_at > 0:
        minutes = (time.time() - started_at) / 60.0
        lines.append(f"  demo wall time: {minutes:.1f} min (after install)")
    return lines, ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo-dir", required=True, help="the folder `make demo` wrote")
    parser.add_argument("--min-ap50", type=float, default=0.0,
                        help="fail (exit 1) when AP50 (percent) is below this; 0 = no check")
    parser.add_argument("--started-at", type=float, default=0.0,
                        help="Unix time the demo started (prints the elapsed time)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.demo_dir):
        print(f"error: --demo-dir {args.demo_dir!r} is not a folder", file=sys.stderr)
        return 2
    lines, ok = summarize(args.demo_dir, args.min_ap50, args.started_at)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
