"""Validates every annotation and decodes every image of a COCO or VOC dataset.

    python tools/check_dataset.py --config CFG [--split train|test] [--set K=V ...]
    python tools/check_dataset.py --coco ANN.json --images DIR
    python tools/check_dataset.py --voc VOCDEVKIT --splits 2007/trainval [2012/trainval ...]

Prints a summary (images, decodable, unreadable with their names, annotations, boxes left out
by reason, boxes per class, size mismatches). Exit code: 0 = no problem, 1 = problems found
(including an annotation file that cannot be read), 2 = bad arguments or config.
"""
import argparse
import sys

from dcn_det.cli import add_set_arg, run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", help="YAML config; checks its data.train or data.test set")
    which.add_argument("--coco", metavar="ANN", help="COCO instances JSON (with --images)")
    which.add_argument("--voc", metavar="ROOT", help="VOCdevkit folder (with --splits)")
    parser.add_argument("--split", choices=("train", "test"), default="train",
                        help="with --config: which data set (default train)")
    add_set_arg(parser, help="config overrides (repeatable)")
    parser.add_argument("--images", help="with --coco: the folder file_name is relative to")
    parser.add_argument("--splits", nargs="+", default=[], metavar="YEAR/SET",
                        help="with --voc: e.g. 2007/trainval 2012/trainval")
    parser.add_argument("--workers", type=int, default=4, help="decoding threads")
    args = parser.parse_args(argv)
    if args.coco and not args.images:
        parser.error("--coco needs --images")
    if args.voc and not args.splits:
        parser.error("--voc needs --splits")

    from dcn_det.data.base import DatasetError
    from dcn_det.data.check import check_dataset, dataset_for_check
    if args.config:
        from dcn_det.config import load_config
        ds_cfg = getattr(load_config(args.config, args.set).data, args.split)
        kind, root, ann, splits = ds_cfg.type, ds_cfg.root, ds_cfg.ann_file, ds_cfg.splits
    elif args.coco:
        kind, root, ann, splits = "coco", args.images, args.coco, ()
    else:
        kind, root, ann, splits = "voc", args.voc, "", args.splits
    if kind == "synthetic":
        print(f"data.{args.split} is the synthetic dataset, generated in memory: no files to check")
        return 0
    try:
        dataset = dataset_for_check(kind, root, ann, splits)
    except (DatasetError, FileNotFoundError) as e:
        print(f"error: the annotations cannot be used: {e}", file=sys.stderr)
        print("result: PROBLEMS: invalid annotations")
        return 1
    report = check_dataset(dataset, workers=args.workers, progress=True)
    print(report.format())
    return 0 if report.ok else 1


def run(argv=None) -> int:
    """The console command: :func:`main` with user errors as one line and an exit code."""
    return run_main(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run())
