"""The backbone's deformable stem pool (``model.backbone.stem_pool: deform_max``)."""
import dataclasses
import os

import pytest
import torch
from torch import nn

from dcn_det.analysis.capture import OffsetCapture, find_deformable_convs
from dcn_det.config import BackboneConfig, ConfigError, load_config
from dcn_det.engine.optim import param_groups
from dcn_det.export import export_program
from dcn_det.modeling import build_model
from dcn_det.modeling.backbone import ResNet, build_backbone
from dcn_det.ops import DeformMaxPool2d

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), "configs", "demo", "rfcn_dcn_synthetic.yaml")
SMALL = ["model.backbone.depth=18", "model.backbone.width_mult=0.125",
         "model.backbone.norm=bn", "model.backbone.pretrained=''",
         "model.rpn.conv_channels=16", "model.rpn.pre_nms_topk_train=200",
         "model.rpn.post_nms_topk_train=50", "model.rpn.pre_nms_topk_test=200",
         "model.rpn.post_nms_topk_test=50", "model.head.conv_channels=32",
         "model.head.batch_size_per_image=32", "model.num_classes=3",
         "data.test.synthetic.num_classes=3"]


def tiny(**kwargs):
    args = dict(depth=18, width_mult=0.125, freeze_at=0, norm="frozen_bn")
    args.update(kwargs)
    return ResNet(**args)


def test_default_is_the_max_pool():
    assert BackboneConfig().stem_pool == "max"
    assert type(tiny().maxpool) is nn.MaxPool2d


@pytest.mark.parametrize("groups,expected", [(4, 4), (8, 8), (3, 1), (16, 1)])
def test_deform_stem_pool_groups_and_lr_mult(groups, expected):
    """Offset groups follow deform_offset_groups where they divide the stem width (8 here),
    else 1; the offset conv carries deform_offset_lr_mult."""
    model = tiny(stem_pool="deform_max", deform_offset_groups=groups, deform_offset_lr_mult=0.25)
    pool = model.maxpool
    assert isinstance(pool, DeformMaxPool2d)
    assert pool.channels == 8 and pool.offset_groups == expected
    assert (pool.kernel_size, pool.stride, pool.padding) == ((3, 3), (2, 2), (1, 1))
    assert pool.conv_offset.lr_mult == 0.25
    groups_by_name = {g["name"]: g["lr"] for g in param_groups(
        model, base_lr=1.0, weight_decay=0.0, weight_decay_norm=0.0, bias_lr_factor=1.0)}
    assert groups_by_name["maxpool.conv_offset.weight"] == 0.25


def test_deform_stem_pool_starts_as_the_max_pool_and_trains_when_the_stem_is_frozen():
    plain = tiny(freeze_at=2).eval()
    deform = tiny(freeze_at=2, stem_pool="deform_max").eval()
    missing, unexpected = deform.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["maxpool.conv_offset.bias", "maxpool.conv_offset.weight"]
    assert not unexpected
    assert deform.maxpool.conv_offset.weight.abs().sum() == 0  # still zero after init
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        for name, feat in plain(x).items():
            assert torch.equal(deform(x)[name], feat), name
    # freeze_at=2 freezes conv1/bn1/res2, but not the pool's new offset conv.
    assert not deform.conv1.weight.requires_grad
    assert all(p.requires_grad for p in deform.maxpool.parameters())


def test_bad_stem_pool_is_named():
    with pytest.raises(ValueError, match="stem_pool must be one of"):
        tiny(stem_pool="avg")
    with pytest.raises(ConfigError, match="stem_pool"):
        load_config(CONFIG, ["model.backbone.stem_pool=avg"])


def test_build_backbone_passes_stem_pool():
    cfg = dataclasses.replace(BackboneConfig(), depth=18, width_mult=0.125,
                              stem_pool="deform_max", deform_offset_groups=2)
    assert build_backbone(cfg).maxpool.offset_groups == 2


def test_offset_analysis_ignores_the_stem_pool():
    model = tiny(stem_pool="deform_max", deform_stages=["res5"])
    names = [name for name, _ in find_deformable_convs(model)]
    assert names and all(name.startswith("res5") for name in names)
    with OffsetCapture(model) as cap:
        model(torch.randn(1, 3, 64, 64))
    assert [r.name for r in cap.ordered_records()] == names


def _small_model():
    cfg = load_config(CONFIG, SMALL + ["model.backbone.stem_pool=deform_max"])
    assert cfg.model.backbone.stem_pool == "deform_max"
    torch.manual_seed(0)
    return build_model(cfg.model), cfg


def test_config_build_and_one_train_step():
    model, cfg = _small_model()
    pool = model.backbone.maxpool
    assert isinstance(pool, DeformMaxPool2d)
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8, generator=g)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [50.0, 40.0, 120.0, 90.0]]),
                "labels": torch.tensor([0, 2])}]
    model.train()
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    grad = pool.conv_offset.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.slow  # torch.export of a detector
def test_torch_export_of_the_detector():
    model, _ = _small_model()
    model.eval()
    with torch.no_grad():  # small random offsets, so the deformable sampling matters
        nn.init.normal_(model.backbone.maxpool.conv_offset.weight, std=0.02)
    example = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    program = export_program(model, example, None).module()
    for h, w in [(64, 96), (80, 64)]:
        img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        with torch.no_grad():
            want = model([img])[0]
            got = program(img)
        for tensor, key in zip(got, ("boxes", "scores", "labels")):
            assert tensor.shape == want[key].shape, key
            torch.testing.assert_close(tensor, want[key], rtol=1e-5, atol=1e-4)
