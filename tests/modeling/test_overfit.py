"""A tiny R-FCN-DCN overfits two synthetic images: the model can learn at all."""
import os

import pytest
import torch

from dcn_det.config import load_config
from dcn_det.data.build import build_train_loader
from dcn_det.engine.optim import build_optimizer
from dcn_det.evaluation import VOCEvaluator
from dcn_det.modeling import build_model
from tests.modeling.training import train_losses

# Trains a model until it overfits (tens of seconds).
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tiny_rfcn_dcn_overfits_two_images():
    torch.manual_seed(0)
    cfg = load_config(os.path.join(ROOT, "configs/demo/rfcn_dcn_synthetic.yaml"), [
        "data.images_per_batch=2", "data.num_workers=0", "data.flip_prob=0.0",
        "data.min_size_train=[160]", "data.max_size_train=192",
        "data.train.synthetic.image_size=[160,192]", "data.train.synthetic.max_objects=3"])
    assert cfg.model.backbone.deform_stages == ("res5",) and cfg.model.head.deformable
    model = build_model(cfg.model)
    optimizer = build_optimizer(model, cfg.solver)
    images, targets = next(build_train_loader(cfg.data, seed=0))
    assert sum(len(t["boxes"]) for t in targets) >= 4

    totals = train_losses(model, optimizer, [(images, targets)], 200)
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    assert last * 5 <= first, (first, last)

    model.eval()
    with torch.no_grad():
        outputs = model(images)
    evaluator = VOCEvaluator([f"c{k}" for k in range(cfg.model.num_classes)],
                             use_07_metric_too=False)
    for i, (t, o) in enumerate(zip(targets, outputs)):
        evaluator.add(i, {"boxes": t["boxes"], "labels": t["labels"]}, o)
    ap50 = evaluator.evaluate()["voc"]["mAP"]
    # Seeds 0-2 of this setup reach 100, 100 and 90.
    assert ap50 >= 85, ap50
