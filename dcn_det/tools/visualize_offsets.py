"""Draws what a model's deformable offsets learned: composed sampling points and pooling bins.

    python tools/visualize_offsets.py --model FILE --input IMG_OR_DIR --output-dir DIR
        [--points auto | --points X,Y [X,Y ...]] [--score-thresh 0.5] [--max-detections 3]
        [--chain LAYER [LAYER ...] | --chain all] [--group 0|mean] [--min-side 512]
        [--device cpu]

FILE is an inference file (tools/export.py) or a training checkpoint. For each input image
NAME.ext it writes (NAME_ext when two inputs share a name):

  DIR/NAME_points.png  models with deformable conv: the detections, and for each unit the
                       sampling points composed through the deformable layers of the last
                       deformable stage (--chain), one colour per layer, the unit in green
                       (paper Figure 5); modulated (v2) points sized/faded by mask weight.
  DIR/NAME_bins.png    models with deformable (PS-)RoI pooling: the top detections with their
                       pooling bins moved by the learned offsets (class colour) and the
                       regular bins faint (paper Figures 6-7).

Units: --points auto (default) = the centres of the top --max-detections detections scoring
>= --score-thresh (the image centre when none does); explicit X,Y are original-image pixels.
Pictures are in original-image pixels, drawn on the image enlarged to a short side of
--min-side pixels (default 512) when it is smaller. Unreadable images are skipped with a
warning and counted (exit status 1 when none could be read).
"""
import argparse
import sys

from dcn_det.cli import run_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="inference file or training checkpoint")
    parser.add_argument("--input", required=True, help="an image file or a folder of images")
    parser.add_argument("--output-dir", required=True, help="folder for the PNG files")
    parser.add_argument("--points", nargs="+", default=["auto"], metavar="auto|X,Y",
                        help="units: 'auto' (detection centres) or X,Y in original-image pixels")
    parser.add_argument("--score-thresh", type=float, default=0.5)
    parser.add_argument("--max-detections", type=int, default=3,
                        help="detections drawn, used as units and given bins")
    parser.add_argument("--chain", nargs="+", default=None, metavar="LAYER",
                        help="deformable layers to compose (consecutive, e.g. res5.0.conv2 "
                             "res5.1.conv2), or 'all'; default: the last deformable stage")
    parser.add_argument("--group", default="0",
                        help="offset group to follow, or 'mean' (default 0)")
    parser.add_argument("--min-side", type=int, default=512,
                        help="enlarge smaller pictures to this short side (0 = never)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    from dcn_det.analysis.capture import find_deformable_convs
    from dcn_det.analysis.forward import has_deformable_conv, has_deformable_pooling
    from dcn_det.analysis.sampling import chain_indices
    from dcn_det.analysis.visualize import output_stem, parse_points, visualize_image
    from dcn_det.data.transforms import decode_image, list_images
    from dcn_det.distributed import parse_device
    from dcn_det.predictor import Predictor

    try:
        points = parse_points(args.points)
    except ValueError as e:
        parser.error(str(e))
    if args.group != "mean" and not args.group.isdigit():
        parser.error(f"--group must be an offset group index or 'mean', got {args.group!r}")
    group = args.group if args.group == "mean" else int(args.group)
    if args.min_side < 0:
        parser.error(f"--min-side must be >= 0, got {args.min_side}")
    if args.max_detections < 1:
        parser.error(f"--max-detections must be >= 1, got {args.max_detections}")
    chain = args.chain[0] if args.chain == ["all"] else args.chain
    images = list_images(args.input)
    predictor = Predictor(args.model, device=parse_device(args.device),
                          score_thresh=args.score_thresh)
    if not has_deformable_conv(predictor.model) and not has_deformable_pooling(predictor.model):
        print(f"error: {args.model!r} has neither deformable convolution nor deformable RoI "
              "pooling: there are no offsets to draw", file=sys.stderr)
        return 2
    convs = find_deformable_convs(predictor.model)
    if chain is not None and convs:
        try:
            chain_indices([n for n, _ in convs], chain)
        except ValueError as e:
            parser.error(f"--chain: {e}")
    if group != "mean" and convs and group >= min(m.offset_groups for _, m in convs):
        parser.error(f"--group {group} is not an offset group of every deformable conv (they "
                     f"have {sorted({m.offset_groups for _, m in convs})} groups)")
    used, skipped = set(), 0
    for path in images:
        try:
            image = decode_image(path)
        except (RuntimeError, OSError) as e:  # empty, truncated, corrupt or vanished file
            print(f"warning: skipping {path}: {e}", file=sys.stderr)
            skipped += 1
            continue
        written, notes = visualize_image(
            predictor, image, args.output_dir, output_stem(path, used), points=points,
            max_detections=args.max_detections, chain=chain, group=group,
            min_side=args.min_side)
        for note in notes:
            print(f"{path}: {note}")
        print(f"{path} -> {', '.join(written) if written else 'nothing written'}")
    if skipped:
        print(f"skipped {skipped} of {len(images)} images that could not be read",
              file=sys.stderr)
    return 1 if skipped == len(images) else 0


def run(argv=None) -> int:
    """The console command: :func:`main` with user errors as one line and an exit code."""
    return run_main(lambda: main(argv))


if __name__ == "__main__":
    sys.exit(run())
