"""PASCAL VOC average precision for one class, on continuous-pixel boxes.

Matching follows the VOC devkit (VOCevaldet.m): detections are taken in descending score order
(ties keep their input order); each is compared with the ground truth of its image and class,
and the one with the highest IoU is chosen. If that IoU >= ``iou_thresh`` (0.5): a "difficult"
box makes the detection ignored (neither TP nor FP); an unmatched box makes it a TP and marks the
box as taken; an already-taken box makes it a FP (duplicate; the devkit does not fall back to
the second-best box). Otherwise it is a FP. Difficult boxes are not counted in the recall.

Boxes are XYXY in continuous pixel coordinates, so width is ``x2 - x1`` (the devkit's "+1" for
1-based inclusive integer pixels is not used; the VOC dataset converts its boxes to this frame).
"""
from typing import Dict, Sequence, Tuple

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a (N, 4)`` with every box in ``b (M, 4)``, XYXY -> ``(N, M)``."""
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def match_detections(
    gt: Dict[object, Tuple[np.ndarray, np.ndarray]],
    det_image_ids: Sequence[object],
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    iou_thresh: float = 0.5,
) -> Tuple[np.ndarray, np.ndarray, int]:
    """Labels each detection of one class TP, FP or ignored, in descending score order.

    Args:
        gt: ``image_id -> (boxes (M, 4) float XYXY px, difficult (M,) bool)`` for this class.
            Images not in ``gt`` have no boxes of this class.
        det_image_ids: ``(D,)`` image id of each detection.
        det_boxes: ``(D, 4)`` XYXY px.
        det_scores: ``(D,)``.
        iou_thresh: minimum IoU for a match.

    Returns:
        ``tp (D',)`` and ``fp (D',)`` 0/1 float arrays in descending score order, where ``D'``
        excludes the ignored detections, and ``npos``, the number of non-difficult GT boxes.
    """
    npos = int(sum(int((~diff).sum()) for _, diff in gt.values()))
    order = np.argsort(-det_scores, kind="stable")
    taken = {image_id: np.zeros(len(boxes), dtype=bool) for image_id, (boxes, _) in gt.items()}
    tp, fp = [], []
    for d in order:
        image_id = det_image_ids[d]
        boxes, difficult = gt.get(image_id, (np.zeros((0, 4)), np.zeros(0, dtype=bool)))
        if len(boxes):
            ious = box_iou(det_boxes[d:d + 1], boxes)[0]
            j = int(np.argmax(ious))
            if ious[j] >= iou_thresh:
                if difficult[j]:
                    continue
                if not taken[image_id][j]:
                    taken[image_id][j] = True
                    tp.append(1.0)
                    fp.append(0.0)
                    continue
        tp.append(0.0)
        fp.append(1.0)
    return np.asarray(tp), np.asarray(fp), npos


def precision_recall(tp: np.ndarray, fp: np.ndarray, npos: int) -> Tuple[np.ndarray, np.ndarray]:
    """Cumulative ``(precision, recall)`` arrays along the score-sorted detections."""
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    recall = ctp / max(npos, 1)
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).tiny)
    return precision, recall


def ap_area(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC2010+ AP: area under the monotone (non-increasing) precision envelope, in [0, 1]."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    # Envelope: precision at recall r is the best precision at any recall >= r.
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def ap_11_point(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC2007 AP: mean over recall thresholds 0, 0.1, ..., 1 of the best precision at
    recall >= threshold (0 when that recall is never reached), in [0, 1]."""
    total = 0.0
    for i in range(11):
        reached = recall >= i / 10.0
        total += float(precision[reached].max()) if reached.any() else 0.0
    return total / 11.0
