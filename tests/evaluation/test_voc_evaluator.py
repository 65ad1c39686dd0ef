"""VOCEvaluator on hand-made cases whose AP is known exactly."""
import math

import numpy as np
import pytest
import torch

from dcn_det.evaluation import VOCEvaluator
from dcn_det.evaluation.voc_ap import box_iou

NAMES = ["cat", "dog", "bird"]


def box(x, y, w=10.0, h=10.0):
    return [x, y, x + w, y + h]


def det(boxes, scores, labels):
    return {"boxes": boxes, "scores": scores, "labels": labels}


def gt(boxes, labels, difficult=None):
    out = {"boxes": boxes, "labels": labels}
    if difficult is not None:
        out["difficult"] = difficult
    return out


def test_box_iou_continuous_pixels():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    b = np.array([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    # overlap 5x10 = 50, union 150 -> 1/3; disjoint -> 0; identical -> 1
    np.testing.assert_allclose(box_iou(a, b), [[1 / 3, 0.0, 1.0]])


def test_perfect_detections_give_100():
    ev = VOCEvaluator(NAMES)
    ev.add(1, gt([box(0, 0), box(30, 30)], [0, 1]),
           det([box(30, 30), box(0, 0)], [0.6, 0.9], [1, 0]))
    ev.add(2, gt([box(5, 5, 40, 20)], [2]), det([box(5, 5, 40, 20)], [0.3], [2]))
    ev.add(3, gt([], []), det([], [], []))  # an image without objects or detections
    r = ev.evaluate()["voc"]
    assert r["mAP"] == 100.0 and r["mAP_07"] == 100.0
    assert all(c == {"AP": 100.0, "AP_07": 100.0} for c in r["per_class"].values())
    assert r["classes_without_gt"] == []


def test_no_detections_give_0():
    ev = VOCEvaluator(NAMES)
    ev.add(1, gt([box(0, 0), box(30, 30), box(60, 0)], [0, 1, 2]), det([], [], []))
    r = ev.evaluate()["voc"]
    assert r["mAP"] == 0.0 and r["mAP_07"] == 0.0


def test_known_precision_recall_curve_area_vs_11_point():
    # One class, 4 GT boxes (two per image). Detections by descending score:
    #   TP, FP, TP, TP, FP  ->  cumulative TP 1,1,2,3,3  FP 0,1,1,1,2
    #   recall    = .25, .25, .50, .75, .75
    #   precision = 1,   .5,  2/3, .75, .6
    # Area AP (monotone envelope): recall 0->.25 at 1, .25->.5 at .75, .5->.75 at .75,
    #   .75->1 at 0  =>  .25 + .1875 + .1875 = .625  -> 62.5
    # 11-point: t=0,.1,.2 -> 1 (3 points); t=.3..0.7 -> .75 (5 points); t=.8..1 -> 0
    #   => (3 + 3.75) / 11 = 6.75 / 11 -> 61.3636...
    ev = VOCEvaluator(["thing"])
    ev.add_ground_truth("a", [box(0, 0), box(50, 0)], [0, 0])
    ev.add_ground_truth("b", [box(0, 50), box(50, 50)], [0, 0])
    ev.add_detections("a", [box(0, 0), box(100, 100), box(50, 0)], [0.9, 0.8, 0.6], [0, 0, 0])
    ev.add_detections("b", [box(0, 50), box(200, 200)], [0.7, 0.5], [0, 0])
    r = ev.evaluate()["voc"]
    assert r["per_class"]["thing"]["AP"] == pytest.approx(62.5, abs=1e-9)
    assert r["per_class"]["thing"]["AP_07"] == pytest.approx(100 * 6.75 / 11, abs=1e-9)
    assert r["mAP"] == pytest.approx(62.5) and r["mAP_07"] == pytest.approx(61.363636, abs=1e-5)


def test_duplicate_detection_is_a_false_positive():
    # GT A, B. Detections: A (.9), A again (.8), B (.7)  ->  TP, FP, TP
    # recall .5, .5, 1; precision 1, .5, 2/3
    # area: .5 * 1 + .5 * 2/3 = 5/6 -> 83.33; 11-point: t=0..0.5 -> 1 (6), t=.6..1 -> 2/3 (5)
    #   => (6 + 10/3) / 11 -> 84.848...
    ev = VOCEvaluator(["thing"])
    ev.add(7, gt([box(0, 0), box(40, 0)], [0, 0]),
           det([box(0, 0), box(0.5, 0), box(40, 0)], [0.9, 0.8, 0.7], [0, 0, 0]))
    r = ev.evaluate()["voc"]["per_class"]["thing"]
    assert r["AP"] == pytest.approx(100 * 5 / 6)
    assert r["AP_07"] == pytest.approx(100 * (6 + 10 / 3) / 11)


def test_difficult_boxes_are_ignored():
    # GT: A normal, B difficult. Detections: on B (.9) -> ignored, elsewhere (.8) -> FP,
    # on A (.7) -> TP. npos = 1: precision .5 at recall 1  ->  AP 50 (both metrics).
    # (B counted as FP would give 33.3; B as a normal box would give 83.3.)
    ev = VOCEvaluator(["thing"])
    ev.add(1, gt([box(0, 0), box(40, 0)], [0, 0], difficult=[False, True]),
           det([box(40, 0), box(80, 80), box(0, 0)], [0.9, 0.8, 0.7], [0, 0, 0]))
    r = ev.evaluate()["voc"]["per_class"]["thing"]
    assert r["AP"] == pytest.approx(50.0) and r["AP_07"] == pytest.approx(50.0)


def test_undetected_difficult_box_does_not_lower_recall():
    ev = VOCEvaluator(["thing"])
    ev.add(1, gt([box(0, 0), box(40, 0)], [0, 0], difficult=torch.tensor([False, True])),
           det([box(0, 0)], [0.9], [0]))
    assert ev.evaluate()["voc"]["mAP"] == 100.0


def test_only_difficult_gt_counts_as_no_gt():
    ev = VOCEvaluator(["thing", "other"])
    ev.add(1, gt([box(0, 0), box(40, 0)], [0, 1], difficult=[True, False]),
           det([box(40, 0)], [0.9], [1]))
    r = ev.evaluate()["voc"]
    assert math.isnan(r["per_class"]["thing"]["AP"]) and r["classes_without_gt"] == ["thing"]


def test_class_without_gt_is_nan_and_left_out_of_the_mean():
    # cat: perfect (100); dog: one of two GT found with precision 1 -> area 50, 11-point 6/11;
    # bird: no GT (its false positive does not matter) -> NaN, excluded from the mean.
    ev = VOCEvaluator(NAMES)
    ev.add(1, gt([box(0, 0), box(30, 0), box(60, 0)], [0, 1, 1]),
           det([box(0, 0), box(30, 0), box(90, 90)], [0.9, 0.8, 0.7], [0, 1, 2]))
    r = ev.evaluate()["voc"]
    assert math.isnan(r["per_class"]["bird"]["AP"]) and math.isnan(r["per_class"]["bird"]["AP_07"])
    assert r["classes_without_gt"] == ["bird"]
    assert r["per_class"]["dog"]["AP"] == pytest.approx(50.0)
    assert r["per_class"]["dog"]["AP_07"] == pytest.approx(100 * 6 / 11)
    assert r["mAP"] == pytest.approx((100 + 50) / 2)
    assert r["mAP_07"] == pytest.approx((100 + 600 / 11) / 2)


def test_iou_threshold_and_no_plus_one_convention():
    ev = VOCEvaluator(["thing"])
    # IoU exactly 0.5 (continuous): a match.
    ev.add(1, gt([[0, 0, 10, 10]], [0]), det([[0, 0, 10, 5]], [0.9], [0]))
    # Continuous IoU 0.48 -> miss. (With VOC's "+1" pixels it would be 11*5.8/121 = 0.527.)
    ev.add(2, gt([[0, 0, 10, 10]], [0]), det([[0, 0, 10, 4.8]], [0.8], [0]))
    # TP, FP on 2 GT: recall .5 at precision 1, never 1 -> area AP 50
    assert ev.evaluate()["voc"]["per_class"]["thing"]["AP"] == pytest.approx(50.0)


def test_wrong_class_detection_does_not_match():
    ev = VOCEvaluator(["a", "b"])
    ev.add(1, gt([box(0, 0)], [0]), det([box(0, 0)], [0.9], [1]))
    r = ev.evaluate()["voc"]
    assert r["per_class"]["a"]["AP"] == 0.0 and math.isnan(r["per_class"]["b"]["AP"])


def test_without_07_metric():
    ev = VOCEvaluator(["a"], use_07_metric_too=False)
    ev.add(1, gt([box(0, 0)], [0]), det([box(0, 0)], [0.9], [0]))
    r = ev.evaluate()["voc"]
    assert "mAP_07" not in r and r["per_class"]["a"] == {"AP": 100.0}


class _FakeDataset:
    """Stands in for a dcn_det dataset: unresized GT via get_annotations(idx)."""

    class_names = ["a", "b"]

    def __init__(self):
        self._anns = [
            {"image_id": 11, "boxes": torch.tensor([box(0, 0)]), "labels": torch.tensor([0]),
             "difficult": torch.tensor([False])},
            {"image_id": 12, "boxes": torch.tensor([box(0, 0), box(50, 50)]),
             "labels": torch.tensor([1, 0]), "difficult": torch.tensor([False, False])},
            {"image_id": 13, "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "difficult": torch.zeros(0, dtype=torch.bool)},
        ]

    def __len__(self):
        return len(self._anns)

    def get_annotations(self, idx):
        return self._anns[idx]


def test_ground_truth_from_a_dataset_and_process_batches():
    ds = _FakeDataset()
    ev = VOCEvaluator(ds.class_names, dataset=ds)
    targets = [{"image_id": torch.tensor(11)}, {"image_id": 13}]
    outputs = [det(torch.tensor([box(0, 0)]), torch.tensor([0.9]), torch.tensor([0])),
               det(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))]
    ev.process(targets, outputs)
    ev.process([12], [det(torch.tensor([box(0, 0)]), torch.tensor([0.8]), torch.tensor([1]))])
    r = ev.evaluate()["voc"]
    # a: image 12's second box was never detected -> recall .5 at precision 1 -> AP 50
    assert r["per_class"]["a"]["AP"] == pytest.approx(50.0)
    assert r["per_class"]["b"]["AP"] == 100.0
    ev.reset()  # detections are forgotten; the dataset's GT remains
    assert ev.evaluate()["voc"]["mAP"] == 0.0


@pytest.mark.parametrize("call, message", [
    (lambda ev: ev.add_detections(1, [[0, 0, 1]], [0.5], [0]), r"detection boxes of image 1 must have shape \(N, 4\)"),
    (lambda ev: ev.add_detections(1, [box(0, 0)], [0.5, 0.4], [0]), r"detection scores of image 1 must have shape \(1,\)"),
    (lambda ev: ev.add_detections(1, [box(0, 0)], [0.5], [2]), r"detection labels of image 1 must be integers in 0\.\.1 .*got 2"),
    (lambda ev: ev.add_ground_truth(1, [box(0, 0)], [-1]), r"ground truth labels of image 1 must be integers in 0\.\.1 .*got -1"),
    (lambda ev: ev.add_ground_truth(1, [[0, 0, float("nan"), 1]], [0]), "NaN"),
    (lambda ev: ev.add_ground_truth(1, [box(0, 0)], [0], difficult=[True, False]), r"difficult flags of image 1 must have shape \(1,\)"),
    (lambda ev: ev.process([1, 2], [det([], [], [])]), "2 targets but 1 outputs"),
    (lambda ev: ev.process([{"id": 1}], [det([], [], [])]), r"targets\[0\] has no 'image_id' key"),
    (lambda ev: ev.add_detections(1.5, [], [], []), "image id must be an int or str, got float"),
])
def test_bad_inputs_are_named(call, message):
    ev = VOCEvaluator(["a", "b"])
    with pytest.raises(ValueError, match=message):
        call(ev)


def test_duplicate_detections_call_and_unknown_image_are_errors():
    ev = VOCEvaluator(["a"])
    ev.add(1, gt([box(0, 0)], [0]), det([box(0, 0)], [0.9], [0]))
    with pytest.raises(ValueError, match="detections of image 1 were already added"):
        ev.add_detections(1, [], [], [])
    ev.add_detections(99, [box(0, 0)], [0.9], [0])
    with pytest.raises(ValueError, match=r"image ids without ground truth: \[99\]"):
        ev.evaluate()


def test_constructor_checks():
    with pytest.raises(ValueError, match="class_names"):
        VOCEvaluator([])
    with pytest.raises(ValueError, match="get_annotations"):
        VOCEvaluator(["a"], dataset=[1, 2])
