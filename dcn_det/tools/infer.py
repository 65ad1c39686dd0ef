"""Detects objects in images or a video and writes drawn copies plus the detections as JSON.

    dcn-infer --model FILE --input IMG_OR_DIR_OR_VIDEO --output-dir DIR
              [--score-thresh 0.5] [--device cpu]

FILE is an inference file from tools/export.py or a training checkpoint. Images: each input
image IMG.ext is written as DIR/IMG.png (DIR/IMG_ext.png when two inputs share a name) and all
detections go to DIR/detections.json (COCO results records with file_name and category_name,
boxes [x, y, w, h] in the image's pixels). An image that cannot be read is skipped with a
warning naming it; the count is reported at the end, and the exit code is 1 only when no
image could be read. A video (.mp4, .avi, .mov, .mkv, ...): DIR/CLIP.mp4 (drawn, same fps and
size) and DIR/CLIP.json (the detections of every frame); an unreadable video exits 2 naming it.
"""
import argparse
import sys

from dcn_det.cli import run_main
from dcn_det.data.transforms import list_images
from dcn_det.distributed import parse_device
from dcn_det.inference import infer_images, infer_video, is_video
from dcn_det.predictor import Predictor


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="inference file or training checkpoint")
    parser.add_argument("--input", required=True,
                        help="an image file, a folder of images, or a video file")
    parser.add_argument("--output-dir", required=True,
                        help="folder for the drawn images/video and the JSON")
    parser.add_argument("--score-thresh", type=float, default=0.5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    predictor = Predictor(args.model, device=parse_device(args.device),
                          score_thresh=args.score_thresh)
    if is_video(args.input):
        infer_video(predictor, args.input, args.output_dir)
        return 0
    return infer_images(predictor, list_images(args.input), args.output_dir, args.input)


def run(argv=None) -> int:
    """The console command: :func:`main` with user errors as one line and an exit code."""
    return run_main(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run())
