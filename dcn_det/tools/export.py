"""Exports a training checkpoint for deployment.

    python tools/export.py --checkpoint CKPT --output FILE [--format pth|export|onnx] [--fp16]
                           [--class-names NAMES.txt] [--device cpu] [--config CFG] [--set K=V ...]

pth: an inference file (weights, resolved config, class names) for dcn_det.Predictor and
tools/infer.py. export: a torch.export program (.pt2) taking one resized uint8 (3, H, W) RGB
image. onnx: the same as an ONNX model (needs the optional onnx and onnxscript packages).

The config is the one stored in CKPT; --config replaces it and --set overrides either (e.g.
test-time settings such as model.head.score_thresh); the weights must still fit the model.
"""
import argparse
import os
import sys

import torch

from dcn_det.export import export_onnx, export_program
from dcn_det.io.model_file import export_inference_file, read_model_file
from dcn_det.data.transforms import resized_shape
from dcn_det.io.model_file import build_inference_model
from dcn_det.cli import add_set_arg, config_from_args, run_main
from dcn_det.config import Config, ConfigError
from dcn_det.io.checkpoint import CheckpointError, load_file
from dcn_det.distributed import parse_device


def _read_names(path: str):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _overridden(args, stored: Config, state) -> Config:
    """The config with --config/--set applied, checked against the weights of the file."""
    cfg = config_from_args(args, stored=stored)
    try:
        build_inference_model(cfg, state, "cpu")
    except RuntimeError as e:
        raise ConfigError(f"the weights in {args.checkpoint!r} do not fit the model of the config "
                          f"given by --config/--set: {str(e).splitlines()[0]} ...") from None
    return cfg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="training checkpoint (.pth)")
    parser.add_argument("--output", required=True, help="file to write")
    parser.add_argument("--format", choices=["pth", "export", "onnx"], default="pth")
    parser.add_argument("--fp16", action="store_true", help="pth: store weights as float16")
    parser.add_argument("--class-names", help="text file with one class name per line, in label "
                        "order (default: the checkpoint's, else class_0..class_{K-1})")
    parser.add_argument("--device", default="cpu", help="export/onnx: device to trace on")
    parser.add_argument("--config", default=None,
                        help="YAML config replacing the one stored in the checkpoint")
    add_set_arg(parser, help="overrides of the stored config (or of --config); repeatable")
    args = parser.parse_args(argv)
    override = bool(args.config or args.set)
    if args.format == "onnx":
        import importlib.util
        missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            parser.error(f"--format onnx needs the optional packages {', '.join(missing)} "
                         "(pip install onnx onnxscript)")
    if args.format == "pth":
        names = _read_names(args.class_names) if args.class_names else None
        source = args.checkpoint
        if override:
            # the checkpoint as a dict, its config replaced by the checked one
            cfg, state, _ = read_model_file(args.checkpoint)
            source = load_file(args.checkpoint, "checkpoint")
            if not isinstance(source, dict):
                raise CheckpointError(f"{args.checkpoint!r} is not a checkpoint dict")
            source = {**source, "config": _overridden(args, cfg, state).to_dict()}
        export_inference_file(source, args.output, fp16=args.fp16, class_names=names)
    else:
        if args.fp16:
            parser.error("--fp16 applies to --format pth only")
        device = parse_device(args.device)
        cfg, state, _ = read_model_file(args.checkpoint)
        if override:
            cfg = _overridden(args, cfg, state)
        model = build_inference_model(cfg, state, device)
        # A typical landscape test image; H and W are exported as dynamic dimensions.
        h, w = resized_shape(3, 4, cfg.data.min_size_test, cfg.data.max_size_test)
        example = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, device=device)
        if args.format == "export":
            export_program(model, example, args.output)
        else:
            export_onnx(model, example, args.output)
    print(f"wrote {args.format} file {os.path.abspath(args.output)}")
    return 0


def run(argv=None) -> int:
    """The console command: :func:`main` with user errors as one line and an exit code."""
    return run_main(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run())
