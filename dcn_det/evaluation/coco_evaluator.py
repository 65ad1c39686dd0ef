"""COCO box AP through pycocotools (COCOeval, iouType "bbox").

Detections arrive as the detector's eval output (XYXY boxes in original-image pixels, contiguous
labels ``0..K-1``) and are converted to the COCO results format (``[x, y, w, h]``, original
category ids) that ``tools/test.py`` writes as ``detections.json``.
"""
import contextlib
import io
import json
import logging
import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from dcn_det.distributed import gather_objects, is_main_process
from dcn_det.io.atomic import write_text
from .inputs import add_batch, check_boxes, check_labels, check_vector, image_id_of

logger = logging.getLogger(__name__)

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6]


def load_coco(coco_gt: Any):
    """Returns a pycocotools ``COCO`` object from an object or an instances JSON path."""
    from pycocotools.coco import COCO

    if isinstance(coco_gt, COCO):
        return coco_gt
    if not isinstance(coco_gt, (str, os.PathLike)):
        raise ValueError(f"coco_gt must be a pycocotools COCO object or a path to an instances "
                         f"JSON, got {type(coco_gt).__name__}")
    path = os.fspath(coco_gt)
    if not os.path.isfile(path):
        raise ValueError(f"coco_gt: annotation file not found: {path}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(path)
    except (json.JSONDecodeError, KeyError, TypeError, AssertionError) as e:
        raise ValueError(f"coco_gt: {path} is not a valid COCO instances JSON "
                         f"({type(e).__name__}: {e})") from None


class COCOEvaluator:
    """Accumulates detections per image, then runs COCOeval (bbox) on rank 0.

    Args:
        coco_gt: a pycocotools ``COCO`` object or the path of an instances JSON.
        contiguous_to_cat_id: label ``k`` -> COCO category id, as a dict ``{0: 1, 1: 5, ...}``
            or a list ``[1, 5, ...]``; labels must cover ``0..K-1``.
        output_dir: where ``detections.json`` (COCO results format) is written; None = nowhere.
    """

    def __init__(self, coco_gt: Any, contiguous_to_cat_id: Union[Mapping[int, int], Sequence[int]],
                 output_dir: Optional[str] = None):
        self.coco_gt = load_coco(coco_gt)
        self.contiguous_to_cat_id = _check_mapping(contiguous_to_cat_id, self.coco_gt)
        self.class_names = [self.coco_gt.loadCats(c)[0]["name"] for c in self.contiguous_to_cat_id]
        self.output_dir = output_dir
        self._gt_image_ids = set(self.coco_gt.getImgIds())
        self.reset()

    @classmethod
    def from_dataset(cls, dataset: Any, output_dir: Optional[str] = None) -> "COCOEvaluator":
        """Builds an evaluator from a dataset exposing ``coco`` and ``contiguous_to_cat_id``."""
        return cls(dataset.coco, dataset.contiguous_to_cat_id, output_dir)

    def reset(self) -> None:
        """Forgets every detection."""
        self._results: List[Dict[str, Any]] = []
        self._image_ids: set = set()

    def add_detections(self, image_id: int, boxes: Any, scores: Any, labels: Any) -> None:
        """Registers the detections of one image.

        Args:
            image_id: the COCO image id.
            boxes: ``(D, 4)`` XYXY in original-image pixels.
            scores: ``(D,)``.
            labels: ``(D,)`` contiguous labels ``0..K-1``.
        """
        image_id = image_id_of(image_id, "image_id")
        if image_id not in self._gt_image_ids:
            raise ValueError(f"image_id {image_id!r} is not an image of the COCO ground truth")
        b = check_boxes(boxes, f"detection boxes of image {image_id}")
        s = check_vector(scores, f"detection scores of image {image_id}", len(b), np.float64)
        lab = check_labels(labels, f"detection labels of image {image_id}", len(b),
                           len(self.contiguous_to_cat_id))
        self._image_ids.add(image_id)
        for (x1, y1, x2, y2), score, label in zip(b.tolist(), s.tolist(), lab.tolist()):
            self._results.append({
                "image_id": image_id,
                "category_id": self.contiguous_to_cat_id[label],
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": score,
            })

    def process(self, targets: Sequence[Any], outputs: Sequence[Dict[str, Any]]) -> None:
        """Adds a batch: ``targets`` give the image ids (dicts with ``"image_id"`` or ids),
        ``outputs`` are the detector's ``{"boxes", "scores", "labels"}`` per image."""
        add_batch(self.add_detections, targets, outputs)

    def evaluate(self) -> Dict[str, Any]:
        """Gathers every rank's detections; on rank 0 writes ``detections.json`` and runs COCOeval.

        Returns:
            On rank 0 ``{"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl"},
            "bbox_per_class": {name: AP}}`` in percent. A metric without ground truth (e.g. APs
            with no small objects, or a class without boxes) is NaN. No detections at all gives
            zeros (NaN for classes without ground truth). Other ranks return ``{}``.
        """
        gathered = gather_objects((self._results, sorted(self._image_ids, key=str)))
        if not is_main_process():
            return {}
        results = [r for rank_results, _ in gathered for r in rank_results]
        image_ids = sorted({i for _, ids in gathered for i in ids})
        if self.output_dir is not None:
            write_text(os.path.join(self.output_dir, "detections.json"), json.dumps(results),
                       root=self.output_dir, what="detections")
        if not results:
            logger.warning("COCOEvaluator: no detections at all; every AP is 0")
            pairs = zip(self.class_names, self.contiguous_to_cat_id)
            return {"bbox": {name: 0.0 for name in STAT_NAMES},
                    "bbox_per_class": {name: (0.0 if self._has_gt(cat) else math.nan)
                                       for name, cat in pairs}}
        return self._run_cocoeval(results, image_ids)

    def _has_gt(self, cat_id: int) -> bool:
        return len(self.coco_gt.getAnnIds(catIds=[cat_id], iscrowd=False)) > 0

    def _run_cocoeval(self, results: List[Dict[str, Any]], image_ids: List[int]) -> Dict[str, Any]:
        from pycocotools.cocoeval import COCOeval

        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            # loadRes adds keys to the dicts it is given: hand it copies.
            coco_dt = self.coco_gt.loadRes([dict(r) for r in results])
            ev = COCOeval(self.coco_gt, coco_dt, iouType="bbox")
            ev.params.imgIds = image_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        logger.info("COCOeval bbox:\n%s", log.getvalue())
        bbox = {name: _percent(v) for name, v in zip(STAT_NAMES, ev.stats[:6])}
        # precision: (iou thresholds, recall points, categories, area ranges, max dets);
        # area "all" is index 0, maxDets 100 is the last.
        precision = ev.eval["precision"]
        per_class = {}
        for name, cat_id in zip(self.class_names, self.contiguous_to_cat_id):
            p = precision[:, :, ev.params.catIds.index(cat_id), 0, -1]
            p = p[p > -1]
            per_class[name] = float(100.0 * p.mean()) if p.size else math.nan
        return {"bbox": bbox, "bbox_per_class": per_class}


def _percent(value: float) -> float:
    """COCOeval's 0-1 stat in percent; its -1 ("no ground truth") becomes NaN."""
    return float(100.0 * value) if value >= 0 else math.nan


def _check_mapping(mapping: Any, coco_gt: Any) -> List[int]:
    """``contiguous_to_cat_id`` as a list indexed by label; checks labels and category ids."""
    if isinstance(mapping, Mapping):
        keys = sorted(mapping)
        if keys != list(range(len(keys))):
            raise ValueError(f"contiguous_to_cat_id keys must be the labels 0..K-1, got {keys}")
        cat_ids = [mapping[k] for k in keys]
    elif isinstance(mapping, Sequence) and not isinstance(mapping, str):
        cat_ids = list(mapping)
    else:
        raise ValueError(
            f"contiguous_to_cat_id must be a dict or a list, got {type(mapping).__name__}")
    if not cat_ids:
        raise ValueError("contiguous_to_cat_id is empty; it must map labels 0..K-1 to category ids")
    cat_ids = [int(c) for c in cat_ids]
    if len(set(cat_ids)) != len(cat_ids):
        raise ValueError(f"contiguous_to_cat_id maps two labels to the same category id: {cat_ids}")
    known = set(coco_gt.getCatIds())
    unknown = [c for c in cat_ids if c not in known]
    if unknown:
        raise ValueError(f"contiguous_to_cat_id names category ids {unknown} that the COCO ground "
                         f"truth does not have (it has {sorted(known)})")
    return cat_ids
