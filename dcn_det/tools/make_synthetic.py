"""Writes the synthetic shapes dataset to disk (train and val splits).

    python tools/make_synthetic.py --output DIR [--format coco|voc] [--num-train N --num-val M --seed S]
    python tools/make_synthetic.py --output DIR --config CFG [--set K=V ...] [--num-train N --num-val M]

COCO: ``DIR/annotations/instances_{train,val}.json`` + ``DIR/{train,val}/*.png`` (config:
``type: coco, root: DIR/train, ann_file: DIR/annotations/instances_train.json``).
VOC: ``DIR/VOC2007/...`` with image sets ``train`` and ``val`` + ``DIR/class_names.txt``
(config: ``type: voc, root: DIR, splits: ["2007/train"]``).

With ``--config`` the two splits (named by their ``split`` fields) are exactly the config's in-memory ``data.train.synthetic``
and ``data.test.synthetic`` sets (seed, split name, sizes, classes, object sizes), so training
on the written files sees the same images as training on the config alone; ``--num-train`` /
``--num-val`` then only override the image counts. Without it, the flags below define both.
"""
import argparse
import os
import sys
from typing import Dict

from dcn_det.data.synthetic import SyntheticDataset, write_coco, write_voc
from dcn_det.cli import add_set_arg, run_main


def _splits_from_config(args) -> Dict[str, dict]:
    """``{"train": kwargs, "val": kwargs}`` for SyntheticDataset from the config's data sets."""
    from dcn_det.config import ConfigError, load_config
    from dcn_det.data.build import synthetic_kwargs
    cfg = load_config(args.config, args.set)
    out = {}
    for split, key, count in (("train", "train", args.num_train), ("val", "test", args.num_val)):
        ds_cfg = getattr(cfg.data, key)
        if ds_cfg.type != "synthetic":
            raise ConfigError(f"{args.config}: data.{key}.type is {ds_cfg.type!r}; --config needs "
                              "the in-memory 'synthetic' type to know what to write")
        out[split] = synthetic_kwargs(ds_cfg.synthetic)
        if count is not None:
            out[split]["num_images"] = count
    if out["train"]["split"] == out["val"]["split"]:
        raise ConfigError(f"{args.config}: data.train.synthetic.split and data.test.synthetic."
                          f"split are both {out['val']['split']!r}; the written files would "
                          "overwrite each other")
    return out


def _splits_from_flags(args) -> Dict[str, dict]:
    common = dict(seed=args.seed, image_size=tuple(args.image_size), num_classes=args.num_classes,
                  max_objects=args.max_objects, min_object_size=args.min_object_size)
    return {"train": dict(common, num_images=64 if args.num_train is None else args.num_train,
                          split="train"),
            "val": dict(common, num_images=16 if args.num_val is None else args.num_val,
                        split="val")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="output folder (created)")
    parser.add_argument("--format", choices=["coco", "voc"], default="coco")
    parser.add_argument("--config", default=None,
                        help="take both splits from this config's synthetic data sets")
    add_set_arg(parser, help="config overrides (with --config; repeatable)")
    parser.add_argument("--num-train", type=int, default=None, help="train images (default 64)")
    parser.add_argument("--num-val", type=int, default=None, help="val images (default 16)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="processes drawing and encoding images (default: CPUs, at most 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-classes", type=int, default=4)
    parser.add_argument("--image-size", type=int, nargs=2, default=[256, 320], metavar=("H", "W"))
    parser.add_argument("--max-objects", type=int, default=6)
    parser.add_argument("--min-object-size", type=float, default=12.0, help="px")
    args = parser.parse_args(argv)
    if args.set and not args.config:
        parser.error("--set needs --config")
    splits = _splits_from_config(args) if args.config else _splits_from_flags(args)
    datasets = []
    for split, kwargs in splits.items():  # check both splits before writing anything
        try:
            datasets.append(SyntheticDataset(**kwargs))
        except ValueError as e:
            where = args.config or "the command line"
            print(f"error: bad synthetic {split} split from {where}: {e}", file=sys.stderr)
            return 2
    for ds in datasets:
        write = write_coco if args.format == "coco" else write_voc
        path = write(ds, args.output, workers=args.workers)
        print(f"{ds.split}: {len(ds)} images -> {path}")
    return 0


def run(argv=None) -> int:
    """The console command: :func:`main` with user errors as one line and an exit code."""
    return run_main(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run())
