"""Parameters and CPU speed of ablation variants, measured side by side in one process.

Usage::

    python benchmarks/variants.py --config configs/ablation/rfcn_shorter.yaml \\
        --variants configs/ablation/studies/open_questions_variants.yaml \\
        [--rounds 5] [--threads 1] [--output out/bench_variants.json]

Each variant (``name: [overrides]``, the file ``tools/ablate.py`` takes) is built from the config
with random weights and fed the same two images of the config's synthetic training split. The
rounds interleave the variants (variant A, B, C, A, B, C, ...), so a change in the machine's
load hits every variant alike; the table gives the median time of a training step (forward and
backward) and of an inference pass, their ratio to the first variant, the parameter count and
the parameters of the offset branches (every ``conv_offset`` and pooling-offset layer).
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dcn_det.ablation.spec import read_overrides_file  # noqa: E402
from dcn_det.config import load_config  # noqa: E402
from dcn_det.data.build import build_dataset  # noqa: E402
from dcn_det.modeling import build_model  # noqa: E402


def _offset_params(model: torch.nn.Module) -> int:
    names = ("conv_offset", "offset_fc", "cls_offset", "bbox_offset")
    return sum(p.numel() for n, p in model.named_parameters()
               if any(f"{k}." in n or n.startswith(k) for k in names))


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--variants", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    variants = read_overrides_file(args.variants, "variants")
    models, images, targets = {}, None, None
    for name, overrides in variants.items():
        cfg = load_config(args.config, list(overrides))
        torch.manual_seed(0)
        models[name] = build_model(cfg.model)
        if images is None:
            data = build_dataset(cfg.data.train, cfg.data, is_train=False)
            items = [data[0], data[1]]
            images = [im for im, _ in items]
            targets = [t for _, t in items]

    def train_step(model):
        model.train()
        model.zero_grad(set_to_none=True)
        sum(model(images, targets).values()).backward()

    def infer(model):
        model.eval()
        with torch.no_grad():
            model(images)

    times = {name: {"train": [], "infer": []} for name in models}
    for name, model in models.items():  # warm-up
        train_step(model)
        infer(model)
    for _ in range(args.rounds):
        for name, model in models.items():
            times[name]["train"].append(_time(lambda: train_step(model)))
            times[name]["infer"].append(_time(lambda: infer(model)))

    rows, first = [], None
    for name, model in models.items():
        tr, inf = statistics.median(times[name]["train"]), statistics.median(times[name]["infer"])
        first = first or (tr, inf)
        rows.append({"variant": name, "params": sum(p.numel() for p in model.parameters()),
                     "offset_params": _offset_params(model), "train_s": tr, "infer_s": inf,
                     "train_ratio": tr / first[0], "infer_ratio": inf / first[1]})
    print("| variant | params | offset params | train step (s) | x | inference (s) | x |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['params']:,} | {r['offset_params']:,} | {r['train_s']:.3f} | "
              f"{r['train_ratio']:.2f} | {r['infer_s']:.3f} | {r['infer_ratio']:.2f} |")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump({"rounds": args.rounds, "threads": args.threads, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
