"""Converts pretrained ResNet weights to a torchvision-format state dict for dcn_det.

    python tools/convert_weights.py --input FILE --output OUT.pth
                                    [--format auto|torchvision|detectron2|mmdet|mxnet]
                                    [--depth 50|101] [--min-fill 0.5]

Reads torchvision and mmdetection torch files, detectron2/Detectron ``.pkl`` files and the
official MXNet Deformable ConvNets ``.params`` files (README "Pretrained weights"), maps the
names onto dcn_det's backbone, converts a BGR stem to RGB, and writes the backbone tensors
(deformable offsets included) as a ``.pth`` that ``model.backbone.pretrained`` loads:
``{"state_dict": {name: tensor}, "dcn_det_weights": {format, stride_in_1x1, pixel_mean,
pixel_std, flipped_bgr}}`` (the second entry records the original's facts, so loading the
converted file checks them as loading the original would). It prints what was converted, what
was left out, and the settings the weights need. ``model.backbone.pretrained`` also reads the
original files directly.
"""
import argparse
import os
import sys

from dcn_det.cli import run_main
from dcn_det.io.atomic import save_torch
from dcn_det.log import setup_logging
from dcn_det.weights import DEFAULT_MIN_FILL, FORMATS, convert
from dcn_det.weights.torch_file import INFO_KEY


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="weights file to convert")
    parser.add_argument("--output", required=True, help=".pth file to write")
    parser.add_argument("--format", choices=("auto",) + FORMATS, default="auto",
                        help="the input's format (auto: from its first bytes and extension)")
    parser.add_argument("--depth", type=int, choices=(50, 101), default=None,
                        help="ResNet depth to check the file against (default: from the file)")
    parser.add_argument("--min-fill", type=float, default=DEFAULT_MIN_FILL,
                        help="fail when under this fraction of the ResNet's tensors is found")
    args = parser.parse_args(argv)
    if not 0.0 <= args.min_fill <= 1.0:
        parser.error(f"--min-fill must be in [0, 1], got {args.min_fill}")
    setup_logging()
    source = convert(args.input, args.format, args.depth, args.min_fill)
    info = {"format": source.format, "stride_in_1x1": source.stride_in_1x1,
            "pixel_mean": list(source.pixel_mean) if source.pixel_mean else None,
            "pixel_std": list(source.pixel_std) if source.pixel_std else None,
            "flipped_bgr": source.flipped_bgr}
    save_torch(args.output, {"state_dict": source.tensors, INFO_KEY: info},
               what="converted weights")
    offsets = sum(".conv_offset." in k for k in source.tensors)
    print(f"read {args.input} as {source.format}: {len(source.tensors)} backbone tensors "
          f"({offsets} offset-conv), {len(source.ignored)} ignored, "
          f"{len(source.not_mapped)} outside the backbone not converted")
    if source.flipped_bgr:
        print("stem conv converted from BGR to RGB input")
    if source.stride_in_1x1 is not None:
        print(f"set model.backbone.stride_in_1x1: {str(source.stride_in_1x1).lower()}")
    if source.pixel_mean is not None:
        print(f"set model.pixel_mean: {list(source.pixel_mean)} and "
              f"model.pixel_std: {list(source.pixel_std)}")
    print(f"wrote {os.path.abspath(args.output)}")
    return 0


def run(argv=None) -> int:
    """The console command: :func:`main` with user errors as one line and an exit code."""
    return run_main(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run())
