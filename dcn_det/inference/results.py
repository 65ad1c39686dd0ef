"""Detections as COCO results records, with the file and the class name added.

One record per detection::

    {"image_id": 1, "file_name": "photo.jpg", "category_id": 3, "category_name": "dog",
     "bbox": [x, y, w, h], "score": 0.97}

``bbox`` is ``[x, y, width, height]`` in pixels of the original image (the frame of the
Predictor's boxes: continuous coordinates, ``x2 - x1`` wide). ``category_id`` is the model's
label ``k`` plus one (COCO ids start at 1; a model file stores class names, not its training
set's category ids, so ``category_name`` is the authoritative class).
"""
from typing import Any, Dict, List, Sequence


def detections_to_records(det: Dict[str, Any], image_id: int, file_name: str,
                          class_names: Sequence[str]) -> List[Dict[str, Any]]:
    """The records of one image's detections, in the Predictor's order (by score).

    Args:
        det: a :class:`dcn_det.Predictor` result: ``"boxes" (D, 4)`` XYXY px of the original
            image, ``"scores" (D,)``, ``"labels" (D,)`` in ``0..K-1``.
        image_id: the id written for this image (or video frame).
        file_name: the image (or video) file, as it should appear in the JSON.
        class_names: the model's K class names.
    """
    records = []
    for (x1, y1, x2, y2), score, label in zip(det["boxes"].tolist(), det["scores"].tolist(),
                                               det["labels"].tolist()):
        records.append({"image_id": int(image_id), "file_name": file_name,
                        "category_id": int(label) + 1, "category_name": class_names[int(label)],
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})
    return records
