"""Chooses and builds the evaluator for a test dataset (``cfg.test.evaluator``)."""
import logging
from typing import Any, Optional

from pycocotools.coco import COCO

from .coco_evaluator import COCOEvaluator
from .voc_evaluator import VOCEvaluator

logger = logging.getLogger(__name__)


def coco_from_dataset(dataset: Any) -> COCO:
    """An in-memory pycocotools ``COCO`` built from ``dataset.get_annotations(i)``.

    Used for datasets without an instances JSON (the synthetic one, VOC): category ``k + 1``
    for label ``k``; boxes XYXY px -> XYWH; ``area`` is the object's mask area when the dataset
    gives ``"areas"`` (so APs/APm/APl use the same sizes COCO would), else the box area;
    VOC ``difficult`` objects become ``iscrowd`` (ignored, like COCO's crowd regions).
    """
    images, anns = [], []
    for i in range(len(dataset)):
        a = dataset.get_annotations(i)
        h, w = a["orig_size"]
        images.append({"id": int(a["image_id"]), "height": int(h), "width": int(w)})
        areas = a.get("areas")
        difficult = a.get("difficult")
        for j, (box, label) in enumerate(zip(a["boxes"].tolist(), a["labels"].tolist())):
            x1, y1, x2, y2 = box
            area = float(areas[j]) if areas is not None else (x2 - x1) * (y2 - y1)
            crowd = int(bool(difficult[j])) if difficult is not None else 0
            anns.append({"id": len(anns) + 1, "image_id": int(a["image_id"]),
                         "category_id": int(label) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": area, "iscrowd": crowd})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": k + 1, "name": n}
                                   for k, n in enumerate(dataset.class_names)]}
    coco.createIndex()
    return coco


def build_evaluator(kind: str, dataset: Any, output_dir: Optional[str] = None):
    """The evaluator ``kind`` (``"coco"`` or ``"voc"``) over ``dataset``'s ground truth.

    Args:
        kind: ``cfg.test.evaluator``.
        dataset: the test dataset (``class_names``, ``get_annotations``; COCO datasets also
            ``coco`` and ``contiguous_to_cat_id``).
        output_dir: where ``detections.json`` goes (COCO evaluator).
    """
    if kind == "coco":
        if hasattr(dataset, "coco"):
            return COCOEvaluator.from_dataset(dataset, output_dir)
        coco = coco_from_dataset(dataset)
        return COCOEvaluator(coco, list(range(1, len(dataset.class_names) + 1)), output_dir)
    if kind == "voc":
        return VOCEvaluator(list(dataset.class_names), dataset=dataset)
    raise ValueError(f"test.evaluator must be 'coco' or 'voc', got {kind!r}")
