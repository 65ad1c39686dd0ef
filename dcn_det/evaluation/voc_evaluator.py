"""PASCAL VOC mAP at IoU 0.5 (VOC2010+ area AP and VOC2007 11-point AP).

Metric details (matching, difficult boxes, no "+1" pixel convention) are in
``dcn_det.evaluation.voc_ap``.
"""
import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from dcn_det.distributed import gather_objects, is_main_process
from .inputs import add_batch, check_boxes, check_labels, check_vector, image_id_of, optional_difficult
from .voc_ap import ap_11_point, ap_area, match_detections, precision_recall


class VOCEvaluator:
    """Accumulates detections (and ground truth) image by image, then computes VOC mAP.

    Ground truth comes either from ``dataset`` (read on rank 0 at ``evaluate()``: every image
    ``idx`` in ``range(len(dataset))`` via ``dataset.get_annotations(idx)``, a dict with
    ``"boxes"``, ``"labels"``, optional ``"difficult"`` and ``"image_id"`` (default ``idx``), in
    original-image pixels), or from ``add_ground_truth``/``add`` calls. Every image with
    detections must have ground truth (possibly empty), so a wrong image id is an error instead
    of silently counting as false positives.

    Usage in a test loop::

        ev = VOCEvaluator(dataset.class_names, dataset=dataset)
        for images, targets in loader:
            ev.process(targets, model(images))
        metrics = ev.evaluate()  # {"voc": {...}} on rank 0, {} elsewhere

    Args:
        class_names: the K class names, in label order (label k is ``class_names[k]``).
        use_07_metric_too: also compute the VOC2007 11-point AP (``"mAP_07"``, ``"AP_07"``).
        iou_thresh: IoU needed for a match (0.5 for VOC).
        dataset: optional ground-truth source as described above.
    """

    def __init__(self, class_names: Sequence[str], use_07_metric_too: bool = True,
                 iou_thresh: float = 0.5, dataset: Optional[Any] = None):
        self.class_names = [str(c) for c in class_names]
        if not self.class_names:
            raise ValueError("class_names must name at least one class, got an empty list")
        self.use_07_metric_too = use_07_metric_too
        self.iou_thresh = float(iou_thresh)
        if dataset is not None and not hasattr(dataset, "get_annotations"):
            raise ValueError(
                f"dataset ({type(dataset).__name__}) has no get_annotations(idx) method")
        self.dataset = dataset
        self.reset()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def reset(self) -> None:
        """Forgets every detection and every ``add_ground_truth`` entry (not ``dataset``)."""
        self._gt: Dict[Any, tuple] = {}
        self._det: Dict[Any, tuple] = {}

    def add_ground_truth(self, image_id: Any, boxes: Any, labels: Any,
                         difficult: Optional[Any] = None) -> None:
        """Registers the ground truth of one image.

        Args:
            image_id: int or str identifying the image.
            boxes: ``(M, 4)`` XYXY in original-image pixels (M may be 0).
            labels: ``(M,)`` ints in ``0..K-1``.
            difficult: ``(M,)`` bools; ``None`` = none difficult.
        """
        image_id = image_id_of(image_id, "image_id")
        b = check_boxes(boxes, f"ground truth boxes of image {image_id!r}")
        lab = check_labels(labels, f"ground truth labels of image {image_id!r}", len(b),
                           self.num_classes)
        diff = optional_difficult(difficult, len(b), f"difficult flags of image {image_id!r}")
        self._gt[image_id] = (b, lab, diff)

    def add_detections(self, image_id: Any, boxes: Any, scores: Any, labels: Any) -> None:
        """Registers the detections of one image (one call per image).

        Args:
            image_id: int or str identifying the image.
            boxes: ``(D, 4)`` XYXY in original-image pixels.
            scores: ``(D,)`` confidences (higher = more confident).
            labels: ``(D,)`` ints in ``0..K-1``.

        Raises:
            ValueError: bad shapes or labels, or a second call for the same image.
        """
        image_id = image_id_of(image_id, "image_id")
        if image_id in self._det:
            raise ValueError(f"detections of image {image_id!r} were already added")
        b = check_boxes(boxes, f"detection boxes of image {image_id!r}")
        s = check_vector(scores, f"detection scores of image {image_id!r}", len(b), np.float64)
        lab = check_labels(labels, f"detection labels of image {image_id!r}", len(b),
                           self.num_classes)
        self._det[image_id] = (b, s, lab)

    def add(self, image_id: Any, gt: Dict[str, Any], det: Dict[str, Any]) -> None:
        """Adds one image: ``gt`` ``{"boxes", "labels", optional "difficult"}`` and ``det``
        ``{"boxes", "scores", "labels"}`` (shapes as in ``add_ground_truth``/``add_detections``)."""
        self.add_ground_truth(image_id, gt["boxes"], gt["labels"], gt.get("difficult"))
        self.add_detections(image_id, det["boxes"], det["scores"], det["labels"])

    def process(self, targets: Sequence[Any], outputs: Sequence[Dict[str, Any]]) -> None:
        """Adds a batch of model outputs; only the image ids are read from ``targets``.

        Args:
            targets: per image, a target dict with ``"image_id"`` or the id itself.
            outputs: per image, ``{"boxes": (D, 4), "scores": (D,), "labels": (D,)}`` in
                original-image pixels (the detector's eval output).
        """
        add_batch(self.add_detections, targets, outputs)

    def _all_ground_truth(self) -> Dict[Any, tuple]:
        gt = {}
        for rank_gt in gather_objects(self._gt):
            gt.update(rank_gt)
        if self.dataset is not None and is_main_process():
            for idx in range(len(self.dataset)):
                ann = self.dataset.get_annotations(idx)
                image_id = image_id_of(ann.get("image_id", idx),
                                       f"get_annotations({idx})['image_id']")
                b = check_boxes(ann["boxes"], f"get_annotations({idx})['boxes']")
                lab = check_labels(ann["labels"], f"get_annotations({idx})['labels']", len(b),
                                   self.num_classes)
                diff = optional_difficult(ann.get("difficult"), len(b),
                                          f"get_annotations({idx})['difficult']")
                gt[image_id] = (b, lab, diff)
        return gt

    def evaluate(self) -> Dict[str, Any]:
        """Gathers all ranks' state and computes the metrics on rank 0.

        Returns:
            On rank 0, ``{"voc": {"mAP", "mAP_07", "per_class": {name: {"AP", "AP_07"}},
            "classes_without_gt": [names]}}`` with APs in percent (0-100); classes without
            (non-difficult) ground truth get AP NaN and are left out of the means. ``"mAP_07"``
            and ``"AP_07"`` are present when ``use_07_metric_too``. Other ranks return ``{}``.
        """
        gt = self._all_ground_truth()
        det: Dict[Any, tuple] = {}
        for rank_det in gather_objects(self._det):
            for image_id, value in rank_det.items():
                det.setdefault(image_id, value)  # padded samplers may repeat an image
        if not is_main_process():
            return {}
        missing = [i for i in det if i not in gt]
        if missing:
            raise ValueError(
                f"detections for image ids without ground truth: {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''} ({len(missing)} images); register every "
                "image with add_ground_truth (empty boxes are fine) or pass dataset=")
        per_class: Dict[str, Dict[str, float]] = {}
        for k, name in enumerate(self.class_names):
            per_class[name] = self._class_ap(k, gt, det)
        without_gt = [n for n, r in per_class.items() if math.isnan(r["AP"])]
        result: Dict[str, Any] = {"mAP": _nanmean([r["AP"] for r in per_class.values()])}
        if self.use_07_metric_too:
            result["mAP_07"] = _nanmean([r["AP_07"] for r in per_class.values()])
        result["per_class"] = per_class
        result["classes_without_gt"] = without_gt
        return {"voc": result}

    def _class_ap(self, k: int, gt: Dict[Any, tuple], det: Dict[Any, tuple]) -> Dict[str, float]:
        class_gt = {}
        for image_id, (boxes, labels, difficult) in gt.items():
            keep = labels == k
            if keep.any():
                class_gt[image_id] = (boxes[keep], difficult[keep])
        ids: List[Any] = []
        boxes_list, scores_list = [np.zeros((0, 4))], [np.zeros(0)]
        for image_id, (boxes, scores, labels) in det.items():
            keep = labels == k
            ids.extend([image_id] * int(keep.sum()))
            boxes_list.append(boxes[keep])
            scores_list.append(scores[keep])
        tp, fp, npos = match_detections(class_gt, ids, np.concatenate(boxes_list),
                                        np.concatenate(scores_list), self.iou_thresh)
        out = {"AP": math.nan}
        if self.use_07_metric_too:
            out["AP_07"] = math.nan
        if npos == 0:
            return out
        precision, recall = precision_recall(tp, fp, npos)
        out["AP"] = 100.0 * ap_area(precision, recall)
        if self.use_07_metric_too:
            out["AP_07"] = 100.0 * ap_11_point(precision, recall)
        return out


def _nanmean(values: List[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(sum(kept) / len(kept)) if kept else math.nan
