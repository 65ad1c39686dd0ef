"""Converts pretrained ResNet weights to a torchvision-format state dict for dcn_det.

    dcn-convert-weights --input FILE --output OUT.pth
                        [--format auto|torchvision|detectron2|mmdet|mxnet]
                        [--depth 50|101] [--min-fill 0.5]
    dcn-convert-weights --detector --input FILE --output OUT.pth
                        [--format auto|dcn_det|mmdet|mxnet] [--group-size 7]

Reads torchvision and mmdetection torch files, detectron2/Detectron ``.pkl`` files and the
official MXNet Deformable ConvNets ``.params`` files (README "Pretrained weights"), maps the
names onto dcn_det's backbone, converts a BGR stem to RGB, and writes the backbone tensors
(deformable offsets included) as a ``.pth`` that ``model.backbone.pretrained`` loads:
``{"state_dict": {name: tensor}, "dcn_det_weights": {format, stride_in_1x1, pixel_mean,
pixel_std, flipped_bgr}}`` (the second entry records the original's facts, so loading the
converted file checks them as loading the original would). It prints what was converted, what
was left out, and the settings the weights need. ``model.backbone.pretrained`` also reads the
original files directly.

With ``--detector`` it converts a whole detector (an mmdetection C4 or FPN checkpoint, an
official MXNet R-FCN / Faster R-CNN ``.params``, a dcn_det file) to dcn_det's detector names and
layouts (background class last): ``{"model": {name: tensor}, "dcn_det_weights": {format,
num_classes, stride_in_1x1, pixel_mean, pixel_std, flipped_bgr, notes}}``, which ``model.weights``
loads.
"""
import argparse
import os
import sys

from dcn_det.cli import run_main
from dcn_det.io.atomic import save_torch
from dcn_det.log import setup_logging
from dcn_det.io.checkpoint import load_file
from dcn_det.weights import (DEFAULT_MIN_FILL, DETECTOR_FORMATS, FORMATS,
                             convert, read_detector_weights)
from dcn_det.weights.torch_file import INFO_KEY


def _info(source) -> dict:
    """The original's facts, recorded beside the converted tensors."""
    return {"format": source.format, "stride_in_1x1": source.stride_in_1x1,
            "pixel_mean": list(source.pixel_mean) if source.pixel_mean else None,
            "pixel_std": list(source.pixel_std) if source.pixel_std else None,
            "flipped_bgr": source.flipped_bgr}


def _print_settings(source) -> None:
    if source.flipped_bgr:
        print("stem conv converted from BGR to RGB input")
    if source.stride_in_1x1 is not None:
        print(f"set model.backbone.stride_in_1x1: {str(source.stride_in_1x1).lower()}")
    if source.pixel_mean is not None:
        print(f"set model.pixel_mean: {list(source.pixel_mean)} and "
              f"model.pixel_std: {list(source.pixel_std)}")


def _convert_backbone(args) -> None:
    source = convert(args.input, args.format, args.depth, args.min_fill)
    save_torch(args.output, {"state_dict": source.tensors, INFO_KEY: _info(source)},
               what="converted weights")
    offsets = sum(".conv_offset." in k for k in source.tensors)
    print(f"read {args.input} as {source.format}: {len(source.tensors)} backbone tensors "
          f"({offsets} offset-conv), {len(source.ignored)} ignored, "
          f"{len(source.not_mapped)} outside the backbone not converted")
    _print_settings(source)


def _convert_detector(args) -> None:
    source = read_detector_weights(args.input, args.format, group_size=args.group_size,
                                   read_checkpoint=load_file)
    heads = [k for k in source.tensors if not k.startswith("backbone.")]
    info = dict(_info(source), num_classes=source.num_classes, notes=list(source.notes))
    save_torch(args.output, {"model": source.tensors, INFO_KEY: info},
               what="converted detector weights")
    print(f"read {args.input} as {source.format}: {len(source.tensors)} detector tensors "
          f"({len(source.tensors) - len(heads)} backbone, {len(heads)} RPN and box head), "
          f"{source.num_classes} classes, {len(source.ignored)} ignored, "
          f"{len(source.not_mapped)} with no place in a dcn_det detector")
    for note in source.notes:
        print(f"note: {note}")
    _print_settings(source)
    print("load it with model.weights (a new run; the class layers are re-initialised when "
          "model.num_classes differs)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="weights file to convert")
    parser.add_argument("--output", required=True, help=".pth file to write")
    parser.add_argument("--detector", action="store_true",
                        help="convert a whole detector (for model.weights), not a backbone")
    parser.add_argument("--format", choices=("auto",) + FORMATS + ("dcn_det",), default="auto",
                        help="the input's format (auto: from its first bytes and extension); "
                             f"with --detector one of {', '.join(DETECTOR_FORMATS)}")
    parser.add_argument("--depth", type=int, choices=(50, 101), default=None,
                        help="ResNet depth to check the file against (default: from the file)")
    parser.add_argument("--min-fill", type=float, default=DEFAULT_MIN_FILL,
                        help="fail when under this fraction of the ResNet's tensors is found")
    parser.add_argument("--group-size", type=int, default=None,
                        help="--detector, MXNet R-FCN without deformable offsets: the "
                             "position-sensitive grid G (default 7)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.min_fill <= 1.0:
        parser.error(f"--min-fill must be in [0, 1], got {args.min_fill}")
    if args.detector and args.format not in ("auto",) + DETECTOR_FORMATS:
        parser.error(f"--format {args.format} is a backbone format; with --detector use one of "
                     f"auto, {', '.join(DETECTOR_FORMATS)}")
    if not args.detector and args.format == "dcn_det":
        parser.error("--format dcn_det needs --detector")
    if args.group_size is not None and args.group_size < 1:
        parser.error(f"--group-size must be a positive int, got {args.group_size}")
    setup_logging()
    (_convert_detector if args.detector else _convert_backbone)(args)
    print(f"wrote {os.path.abspath(args.output)}")
    return 0


def run(argv=None) -> int:
    """The console command: :func:`main` with user errors as one line and an exit code."""
    return run_main(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run())
