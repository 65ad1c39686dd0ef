"""Both evaluators gather detections from every rank and report on rank 0 only (gloo, 2 ranks)."""
import json
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dcn_det.evaluation import COCOEvaluator, VOCEvaluator

# Two spawned processes in a gloo process group.
pytestmark = pytest.mark.slow


def _box(x, y):
    return [x, y, x + 10.0, y + 10.0]


def _worker(rank, world_size, init_file, coco_json, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        # VOC: GT for image r on rank r; detections of both images split across ranks.
        # Rank 0 finds its box; rank 1 adds a FP (.95) and misses nothing else:
        # class AP = TP, FP order by score: FP(.95), TP(.9), TP(.8) -> precision .5, 2/3 at
        # recall .5, 1 -> area AP = .5 * 2/3 + .5 * 2/3 = 2/3.
        voc = VOCEvaluator(["a"])
        voc.add(rank, {"boxes": [_box(0, 0)], "labels": [0]},
                {"boxes": [_box(0, 0)] + ([_box(50, 50)] if rank == 1 else []),
                 "scores": [0.9 - 0.1 * rank] + ([0.95] if rank == 1 else []),
                 "labels": [0] * (1 + rank)})
        # COCO: each rank processes one of the two images.
        coco = COCOEvaluator(coco_json, [3], output_dir=out_dir)
        coco.process([{"image_id": 1 + rank}],
                     [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 60.0]]), "scores": torch.tensor([0.9]),
                       "labels": torch.tensor([0])}])
        result = {"voc": voc.evaluate(), "coco": coco.evaluate()}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def test_two_ranks_gather_on_rank_0(tmp_path):
    coco_json = tmp_path / "gt.json"
    coco_json.write_text(json.dumps({
        "images": [{"id": 1, "height": 100, "width": 100}, {"id": 2, "height": 100, "width": 100}],
        "categories": [{"id": 3, "name": "c"}],
        "annotations": [{"id": i, "image_id": i, "category_id": 3, "bbox": [10, 10, 50, 50],
                         "area": 2500, "iscrowd": 0} for i in (1, 2)],
    }))
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(coco_json), str(tmp_path)), nprocs=2)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r1 == {"voc": {}, "coco": {}}
    assert math.isclose(r0["voc"]["voc"]["mAP"], 100 * 2 / 3)
    assert math.isclose(r0["coco"]["bbox"]["AP"], 100.0)  # both images' detections arrived
    assert len(json.loads((tmp_path / "detections.json").read_text())) == 2
