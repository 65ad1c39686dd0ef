"""Effective dilation of every deformable conv per object size on the test split (Table 2).

    python tools/analyze_offsets.py --config CFG --checkpoint CKPT --output-dir DIR
        [--max-images 100] [--area-thresholds 1024 9216] [--group G] [--set K=V ...]

Runs the model of CKPT (a training checkpoint or an inference file; its architecture comes from
the file) over the first --max-images images of CFG's data.test. Each output location of each
deformable conv is put in a bucket by the smallest ground-truth box containing it (small /
medium / large by box area in original-image pixels, COCO's 32^2 and 96^2 by default) or
background, and its effective dilation (mean distance between adjacent sampling locations, in
pixels of the layer's input map; equals the dilation with zero offsets) is averaged per layer
and bucket. Prints the table ("mean ± std (count)"), writes DIR/effective_dilation.json and
DIR/effective_dilation.png (bar chart). With several checkpoints (e.g. one per seed) each gets
DIR/modelK/, and DIR/effective_dilation_across.json (and .png) hold the mean ± std over them
(the seed-to-seed spread) of each model's mean, also printed.
"""
import argparse
import os
import sys

from dcn_det.cli import add_config_args, config_from_args, run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--checkpoint", required=True, nargs="+",
                        help="training checkpoint(s) or inference file(s); with several (e.g. "
                             "one per seed), also the mean ± std over them")
    parser.add_argument("--max-images", type=int, default=100, help="images measured at most")
    parser.add_argument("--area-thresholds", type=float, nargs=2, default=[32.0 ** 2, 96.0 ** 2],
                        metavar=("SMALL", "LARGE"),
                        help="box areas (original-image px) separating small/medium/large")
    parser.add_argument("--group", type=int, default=None,
                        help="one offset group (default: per location, the mean over groups)")
    args = parser.parse_args(argv)
    if args.max_images < 1:
        parser.error(f"--max-images must be >= 1, got {args.max_images}")
    cfg = config_from_args(args)

    from dcn_det.analysis import (effective_dilation_table, find_deformable_convs,
                                  format_dilation_table, has_deformable_conv,
                                  plot_dilation_table, write_dilation_json)
    from dcn_det.analysis.buckets import check_area_thresholds
    from dcn_det.analysis.dilation_table import (across_tables, format_across_tables,
                                                 plot_across_tables)
    from dcn_det.data.build import build_test_loader
    from dcn_det.distributed import select_device
    from dcn_det.io.atomic import write_json
    from dcn_det.io.model_file import build_inference_model, read_model_file

    try:
        thresholds = check_area_thresholds(args.area_thresholds)
    except ValueError as e:
        parser.error(f"--area-thresholds: {e}")
    device = select_device(cfg.runtime.device)
    out = cfg.runtime.output_dir
    several = len(args.checkpoint) > 1
    tables = []
    for k, path in enumerate(args.checkpoint):
        # The architecture comes from the file (as trained), the data settings from --config.
        file_cfg, state, _ = read_model_file(path)
        model = build_inference_model(file_cfg, state, device)
        if not has_deformable_conv(model):
            print(f"error: the model in {path!r} has no deformable convolution "
                  "(model.backbone.deform_stages is empty): no effective dilation to measure",
                  file=sys.stderr)
            return 2
        groups = {m.offset_groups for _, m in find_deformable_convs(model)}
        if args.group is not None and not 0 <= args.group < min(groups):
            parser.error(f"--group must be in [0, {min(groups)}) (offset groups: "
                         f"{sorted(groups)}), got {args.group}")
        table = effective_dilation_table(model, build_test_loader(cfg.data),
                                         max_images=args.max_images,
                                         area_thresholds=thresholds, group=args.group,
                                         progress=True)
        tables.append(table)
        folder = os.path.join(out, f"model{k}") if several else out
        if several:
            print(f"{path}:")
        print(format_dilation_table(table))
        print(f"wrote {write_dilation_json(table, os.path.join(folder, 'effective_dilation.json'))}")
        print(f"wrote {plot_dilation_table(table, os.path.join(folder, 'effective_dilation.png'))}")
    if several:
        summary = across_tables(tables)
        summary["checkpoints"] = list(args.checkpoint)
        print(format_across_tables(summary))
        path = write_json(os.path.join(out, "effective_dilation_across.json"), summary)
        print(f"wrote {path}")
        print(f"wrote {plot_across_tables(summary, path[:-len('.json')] + '.png')}")
    return 0


def run(argv=None) -> int:
    """The console command: :func:`main` with user errors as one line and an exit code."""
    return run_main(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run())
