"""Detects objects in images and draws the detections into PNG files.

    python tools/infer.py --model FILE --input IMG_OR_DIR --output-dir DIR [--score-thresh 0.5]
                          [--device cpu]

FILE is an inference file from tools/export.py or a training checkpoint. Each input image
IMG.ext is written as DIR/IMG.png (DIR/IMG_ext.png when two inputs share a name). An image
that cannot be read is skipped with a warning naming it; the count is reported at the end,
and the exit code is 1 only when no image could be read.
"""
import argparse
import os
import sys

from dcn_det.data.transforms import decode_image, list_images
from dcn_det.predictor import Predictor
from dcn_det.cli import run_main
from dcn_det.distributed import parse_device
from dcn_det.visualization import draw_detections, save_png

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="inference file or training checkpoint")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output-dir", required=True, help="folder for the drawn PNG files")
    parser.add_argument("--score-thresh", type=float, default=0.5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    predictor = Predictor(args.model, device=parse_device(args.device),
                          score_thresh=args.score_thresh)
    used = set()
    paths, skipped = list_images(args.input), []
    for path in paths:
        try:
            image = decode_image(path)
        except (OSError, RuntimeError) as e:
            print(f"warning: skipped {path}: {e}", file=sys.stderr)
            skipped.append(path)
            continue
        stem, ext = os.path.splitext(os.path.basename(path))
        name = stem + ".png" if stem + ".png" not in used else f"{stem}_{ext.lstrip('.')}.png"
        used.add(name)
        det = predictor(image)
        drawn = draw_detections(image, det["boxes"], det["scores"], det["labels"],
                                predictor.class_names)
        out = save_png(os.path.join(args.output_dir, name), drawn, root=args.output_dir)
        print(f"{path}: {len(det['scores'])} detections -> {out}")
    if skipped:
        print(f"warning: {len(skipped)} of {len(paths)} images could not be read and were "
              f"skipped: {', '.join(skipped)}", file=sys.stderr)
    if len(skipped) == len(paths):
        print(f"error: none of the {len(paths)} images under {args.input!r} could be read",
              file=sys.stderr)
        return 1
    return 0


def run(argv=None) -> int:
    """The console command: :func:`main` with user errors as one line and an exit code."""
    return run_main(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run())
