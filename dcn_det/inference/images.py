"""Images in, drawn PNG files and one ``detections.json`` out (``tools/infer.py``)."""
import os
import sys
from typing import Any, Dict, List, Sequence

from dcn_det.data.transforms import decode_image
from dcn_det.inference.results import detections_to_records
from dcn_det.io.atomic import write_json
from dcn_det.visualization import draw_detections, save_png

DETECTIONS_FILE = "detections.json"


def infer_images(predictor, paths: Sequence[str], output_dir: str, input_name: str = "") -> int:
    """Detects objects in each image file and writes what it found.

    Each image ``IMG.ext`` is drawn into ``output_dir/IMG.png`` (``IMG_ext.png`` when two
    inputs share a name); every detection goes into ``output_dir/detections.json`` (COCO
    results records, :mod:`dcn_det.inference.results`; ``image_id`` is the image's 1-based
    position in ``paths``, ``file_name`` its base name). An image that cannot be read is
    skipped with a warning naming it (on stderr); the count is reported at the end.

    Args:
        predictor: a :class:`dcn_det.Predictor`.
        paths: the image files, in order.
        output_dir: where the PNG files and the JSON go (created).
        input_name: how the final error names the input (``--input``).

    Returns:
        The exit code: 1 when no image could be read, else 0.
    """
    used = set()
    skipped: List[str] = []
    records: List[Dict[str, Any]] = []
    for image_id, path in enumerate(paths, 1):
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
        records += detections_to_records(det, image_id, os.path.basename(path),
                                         predictor.class_names)
        drawn = draw_detections(image, det["boxes"], det["scores"], det["labels"],
                                predictor.class_names)
        out = save_png(os.path.join(output_dir, name), drawn, root=output_dir)
        print(f"{path}: {len(det['scores'])} detections -> {out}")
    if skipped:
        print(f"warning: {len(skipped)} of {len(paths)} images could not be read and were "
              f"skipped: {', '.join(skipped)}", file=sys.stderr)
    if len(skipped) == len(paths):
        print(f"error: none of the {len(paths)} images under {input_name!r} could be read",
              file=sys.stderr)
        return 1
    json_path = write_json(os.path.join(output_dir, DETECTIONS_FILE), records, root=output_dir,
                           what="detections")
    print(f"{len(records)} detections in {len(paths) - len(skipped)} images -> {json_path}")
    return 0
