"""Writes the synthetic shapes dataset to disk (train and val splits).

    python tools/make_synthetic.py --output DIR [--format coco|voc] [--num-train N --num-val M --seed S]

COCO: ``DIR/annotations/instances_{train,val}.json`` + ``DIR/{train,val}/*.png`` (config:
``type: coco, root: DIR/train, ann_file: DIR/annotations/instances_train.json``).
VOC: ``DIR/VOC2007/...`` with image sets ``train`` and ``val`` + ``DIR/class_names.txt``
(config: ``type: voc, root: DIR, splits: ["2007/train"]``).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dcn_det.data.synthetic import SyntheticDataset, write_coco, write_voc  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", required=True, help="output folder (created)")
    parser.add_argument("--format", choices=["coco", "voc"], default="coco")
    parser.add_argument("--num-train", type=int, default=64)
    parser.add_argument("--num-val", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-classes", type=int, default=4)
    parser.add_argument("--image-size", type=int, nargs=2, default=[256, 320], metavar=("H", "W"))
    parser.add_argument("--max-objects", type=int, default=6)
    args = parser.parse_args(argv)
    for split, n in (("train", args.num_train), ("val", args.num_val)):
        ds = SyntheticDataset(n, seed=args.seed, image_size=args.image_size,
                              num_classes=args.num_classes, max_objects=args.max_objects, split=split)
        if args.format == "coco":
            path = write_coco(ds, args.output)
        else:
            path = write_voc(ds, args.output)
        print(f"{split}: {n} images -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
