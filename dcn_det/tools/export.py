"""Exports a training checkpoint for deployment.

    python tools/export.py --checkpoint CKPT --output FILE [--format pth|export|onnx] [--fp16]
                           [--class-names NAMES.txt] [--device cpu]

pth: an inference file (weights, resolved config, class names) for dcn_det.Predictor and
tools/infer.py. export: a torch.export program (.pt2) taking one resized uint8 (3, H, W) RGB
image. onnx: the same as an ONNX model (needs the optional onnx and onnxscript packages).
"""
import argparse
import os
import sys

import torch

from dcn_det.export import export_onnx, export_program
from dcn_det.io.model_file import export_inference_file, read_model_file
from dcn_det.data.transforms import resized_shape
from dcn_det.io.model_file import build_inference_model
from dcn_det.cli import run_main


def _read_names(path: str):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="training checkpoint (.pth)")
    parser.add_argument("--output", required=True, help="file to write")
    parser.add_argument("--format", choices=["pth", "export", "onnx"], default="pth")
    parser.add_argument("--fp16", action="store_true", help="pth: store weights as float16")
    parser.add_argument("--class-names", help="text file with one class name per line, in label "
                        "order (default: the checkpoint's, else class_0..class_{K-1})")
    parser.add_argument("--device", default="cpu", help="export/onnx: device to trace on")
    args = parser.parse_args(argv)
    if args.format == "onnx":
        import importlib.util
        missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            parser.error(f"--format onnx needs the optional packages {', '.join(missing)} "
                         "(pip install onnx onnxscript)")
    if args.format == "pth":
        names = _read_names(args.class_names) if args.class_names else None
        export_inference_file(args.checkpoint, args.output, fp16=args.fp16, class_names=names)
    else:
        if args.fp16:
            parser.error("--fp16 applies to --format pth only")
        cfg, state, _ = read_model_file(args.checkpoint)
        model = build_inference_model(cfg, state, args.device)
        # A typical landscape test image; H and W are exported as dynamic dimensions.
        h, w = resized_shape(3, 4, cfg.data.min_size_test, cfg.data.max_size_test)
        example = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, device=args.device)
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
