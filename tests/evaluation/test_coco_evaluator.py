"""COCOEvaluator against a tiny COCO JSON written by the test."""
import json
import math

import pytest
import torch

from dcn_det.evaluation import COCOEvaluator

# Non-contiguous category ids; "empty" (id 7) has no annotations.
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 5, "name": "plane"},
              {"id": 7, "name": "empty"}, {"id": 90, "name": "toothbrush"}]
CAT_IDS = [1, 5, 7, 90]  # contiguous label k -> category id
# (image_id, category_id, [x, y, w, h]) covering small (< 32^2), medium and large areas.
ANNS = [
    (10, 1, [10.0, 20.0, 20.0, 30.0]),     # small: 600
    (10, 5, [100.0, 50.0, 120.0, 80.0]),   # large: 9600
    (10, 90, [40.0, 150.0, 50.0, 40.0]),   # medium: 2000
    (20, 1, [5.5, 5.25, 60.0, 70.0]),      # large: 4200
    (20, 90, [200.0, 100.0, 8.0, 12.0]),   # small: 96
    (30, 5, [30.0, 30.0, 40.0, 40.0]),     # medium: 1600
]


@pytest.fixture
def coco_json(tmp_path):
    data = {
        "info": {}, "licenses": [],
        "images": [{"id": i, "file_name": f"{i}.png", "height": 240, "width": 320} for i in (10, 20, 30)],
        "categories": CATEGORIES,
        "annotations": [{"id": n + 1, "image_id": img, "category_id": cat, "bbox": bb,
                         "area": bb[2] * bb[3], "iscrowd": 0}
                        for n, (img, cat, bb) in enumerate(ANNS)],
    }
    path = tmp_path / "instances_val.json"
    path.write_text(json.dumps(data))
    return str(path)


def gt_as_outputs(skip=()):
    """The ground truth as detector outputs: XYXY boxes, contiguous labels, per image."""
    targets, outputs = [], []
    for image_id in (10, 20, 30):
        rows = [(cat, bb) for n, (img, cat, bb) in enumerate(ANNS) if img == image_id and n not in skip]
        boxes = torch.tensor([[x, y, x + w, y + h] for _, (x, y, w, h) in rows]).reshape(-1, 4)
        labels = torch.tensor([CAT_IDS.index(cat) for cat, _ in rows], dtype=torch.int64)
        targets.append({"image_id": image_id})
        outputs.append({"boxes": boxes, "scores": torch.linspace(0.9, 0.5, len(rows)), "labels": labels})
    return targets, outputs


@pytest.mark.parametrize("mapping", [CAT_IDS, dict(enumerate(CAT_IDS))])
def test_ground_truth_as_detections_gives_100(coco_json, tmp_path, mapping):
    ev = COCOEvaluator(coco_json, mapping, output_dir=str(tmp_path / "out"))
    targets, outputs = gt_as_outputs()
    ev.process(targets[:2], outputs[:2])
    ev.process(targets[2:], outputs[2:])
    r = ev.evaluate()
    assert r["bbox"] == {k: pytest.approx(100.0) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    per_class = r["bbox_per_class"]
    assert set(per_class) == {"person", "plane", "empty", "toothbrush"}
    assert math.isnan(per_class.pop("empty"))  # no ground truth
    assert per_class == {k: pytest.approx(100.0) for k in ("person", "plane", "toothbrush")}


def test_category_id_round_trip_in_detections_json(coco_json, tmp_path):
    ev = COCOEvaluator(coco_json, CAT_IDS, output_dir=str(tmp_path))
    ev.process(*gt_as_outputs())
    ev.evaluate()
    written = json.loads((tmp_path / "detections.json").read_text())
    got = sorted((d["image_id"], d["category_id"], d["bbox"]) for d in written)
    assert got == pytest.approx(sorted((img, cat, bb) for img, cat, bb in ANNS))
    assert {d["category_id"] for d in written} == {1, 5, 90}  # original ids, not labels
    assert all(set(d) == {"image_id", "category_id", "bbox", "score"} for d in written)


def test_one_missed_box_gives_the_101_point_value(coco_json):
    # Skip person's box in image 20: person has recall .5 at precision 1 at every IoU, so
    # COCO's 101-point precision is 1 at recall 0, .01, ..., .5 (51 points) and 0 after:
    # AP(person) = 51/101. Every other class stays 100.
    ev = COCOEvaluator(coco_json, CAT_IDS)
    ev.process(*gt_as_outputs(skip={3}))
    r = ev.evaluate()
    assert r["bbox_per_class"]["person"] == pytest.approx(100 * 51 / 101)
    assert r["bbox_per_class"]["plane"] == pytest.approx(100.0)
    assert r["bbox"]["AP"] == pytest.approx((100 * 51 / 101 + 200) / 3)


def test_no_detections_gives_zeros(coco_json, tmp_path):
    ev = COCOEvaluator(coco_json, CAT_IDS, output_dir=str(tmp_path))
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    ev.process([10, 20], [empty, empty])
    r = ev.evaluate()
    assert r["bbox"] == {k: 0.0 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    assert r["bbox_per_class"]["person"] == 0.0 and math.isnan(r["bbox_per_class"]["empty"])
    assert json.loads((tmp_path / "detections.json").read_text()) == []
    # Nothing processed at all is the same.
    assert COCOEvaluator(coco_json, CAT_IDS).evaluate()["bbox"]["AP"] == 0.0


def test_reset_and_coco_object_input(coco_json):
    from pycocotools.coco import COCO

    ev = COCOEvaluator(COCO(coco_json), CAT_IDS)
    ev.process(*gt_as_outputs())
    ev.reset()
    assert ev.evaluate()["bbox"]["AP"] == 0.0


def test_from_dataset(coco_json):
    from pycocotools.coco import COCO

    class Dataset:
        coco = COCO(coco_json)
        contiguous_to_cat_id = dict(enumerate(CAT_IDS))

    ev = COCOEvaluator.from_dataset(Dataset())
    assert ev.class_names == ["person", "plane", "empty", "toothbrush"]


@pytest.mark.parametrize("mapping, message", [
    ([1, 5, 6], r"category ids \[6\] that the COCO ground truth does not have"),
    ({0: 1, 2: 5}, r"keys must be the labels 0\.\.K-1, got \[0, 2\]"),
    ([1, 1], "two labels to the same category id"),
    ([], "is empty"),
    ("1,5", "must be a dict or a list"),
])
def test_bad_mapping(coco_json, mapping, message):
    with pytest.raises(ValueError, match=message):
        COCOEvaluator(coco_json, mapping)


def test_bad_ground_truth_sources(tmp_path):
    with pytest.raises(ValueError, match="annotation file not found: .*nope.json"):
        COCOEvaluator(str(tmp_path / "nope.json"), [1])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json is not a valid COCO instances JSON"):
        COCOEvaluator(str(bad), [1])
    with pytest.raises(ValueError, match="coco_gt must be a pycocotools COCO object or a path"):
        COCOEvaluator(42, [1])


def test_bad_detections(coco_json):
    ev = COCOEvaluator(coco_json, CAT_IDS)
    with pytest.raises(ValueError, match="image_id 99 is not an image of the COCO ground truth"):
        ev.add_detections(99, [[0, 0, 1, 1]], [0.5], [0])
    with pytest.raises(ValueError, match=r"detection labels of image 10 must be integers in 0\.\.3 .*got 4"):
        ev.add_detections(10, [[0, 0, 1, 1]], [0.5], [4])
