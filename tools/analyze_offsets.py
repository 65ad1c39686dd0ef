#!/usr/bin/env python
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
DIR/effective_dilation.png (bar chart).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dcn_det.cli import add_config_args, config_from_args, run_main  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--checkpoint", required=True, help="training checkpoint or inference file")
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
    from dcn_det.data.build import build_test_loader
    from dcn_det.distributed import select_device
    from dcn_det.io.model_file import read_model_file
    from dcn_det.io.model_file import build_inference_model

    try:
        thresholds = check_area_thresholds(args.area_thresholds)
    except ValueError as e:
        parser.error(f"--area-thresholds: {e}")
    device = select_device(cfg.runtime.device)
    # The architecture comes from the file (as trained), the data settings from --config.
    file_cfg, state, _ = read_model_file(args.checkpoint)
    model = build_inference_model(file_cfg, state, device)
    if not has_deformable_conv(model):
        print(f"error: the model in {args.checkpoint!r} has no deformable convolution "
              "(model.backbone.deform_stages is empty): no effective dilation to measure",
              file=sys.stderr)
        return 2
    groups = {m.offset_groups for _, m in find_deformable_convs(model)}
    if args.group is not None and not 0 <= args.group < min(groups):
        parser.error(f"--group must be in [0, {min(groups)}) (offset groups: {sorted(groups)}), "
                     f"got {args.group}")
    table = effective_dilation_table(model, build_test_loader(cfg.data),
                                     max_images=args.max_images, area_thresholds=thresholds,
                                     group=args.group)
    out = cfg.runtime.output_dir
    print(format_dilation_table(table))
    print(f"wrote {write_dilation_json(table, os.path.join(out, 'effective_dilation.json'))}")
    print(f"wrote {plot_dilation_table(table, os.path.join(out, 'effective_dilation.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
