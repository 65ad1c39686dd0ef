"""The FPN configs: the schema's tagged sections and rules, one training and one inference step
of every configs/faster_rcnn_fpn/*.yaml at reduced width, and the FPN demo's shared budget."""
import dataclasses
import glob
import os

import pytest
import torch

from dcn_det.config import ConfigError, FPNRPNConfig, load_config
from dcn_det.modeling import build_model
from dcn_det.modeling.heads import FPNFastRCNNHead
from dcn_det.modeling.neck import FPN
from tests.matrix import voc_twins_slow
from tests.modeling.fpn_tiny import CONFIG_DIR, FPN_DEMO, batch, tiny_fpn

FPN_CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "faster_rcnn_fpn", "*.yaml")))


def test_there_are_24_fpn_configs():
    names = {os.path.basename(p) for p in FPN_CONFIGS}
    for ds in ("coco", "voc0712"):
        for depth in (50, 101):
            for v in ("", "_dcn_c3-c5", "_mdconv_c3-c5", "_dpool", "_dcn_dpool",
                      "_deformable_fpn"):
                assert f"faster_rcnn_fpn_r{depth}{v}_{ds}.yaml" in names
    assert len(names) == 24


@pytest.mark.parametrize("path", voc_twins_slow(FPN_CONFIGS, ids=os.path.basename))
def test_every_fpn_config_trains_and_infers(path):
    cfg = load_config(path)
    assert cfg.model.neck.type == "fpn" and cfg.model.backbone.res5_dilation == 1
    assert "Should reproduce" in open(path, encoding="utf-8").read().split("_base_")[0]
    model, small = tiny_fpn(path)
    assert isinstance(model.neck, FPN) and isinstance(model.roi_heads.box_head, FPNFastRCNNHead)
    assert model.roi_heads.box_head.pooler == cfg.model.head.pooler
    deform = [n for n, _ in model.backbone.named_modules() if n.endswith("conv2.conv_offset")]
    assert bool(deform) == bool(cfg.model.backbone.deform_stages)
    images, targets = batch()
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.neck.lateral_convs[0].weight.grad is not None
    model.eval()
    with torch.no_grad():
        dets = model(images)
    assert len(dets) == 2 and all(d["boxes"].shape[1] == 4 for d in dets)


def test_fpn_demo_shares_the_rfcn_demo_budget():
    fpn = load_config(FPN_DEMO)
    c4 = load_config(os.path.join(CONFIG_DIR, "demo", "rfcn_dcn_synthetic.yaml"))
    assert fpn.data == c4.data
    # The same schedule at a third of the learning rate (0.12 diverges with FPN; see the file).
    assert fpn.solver == dataclasses.replace(c4.solver, base_lr=fpn.solver.base_lr)
    assert fpn.solver.base_lr == pytest.approx(c4.solver.base_lr / 3)
    assert fpn.model.neck.type == "fpn" and fpn.model.backbone.deform_stages == ("res5",)


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_fpn_with_dilated_res5_names_both_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.backbone\.res5_dilation: 2 with "
                                          r"model\.neck\.type 'fpn'"):
        load_config(FPN_DEMO, ["model.backbone.res5_dilation=2"])


def test_the_three_fpn_sections_go_together(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.rpn\.type: the FPN detector needs"):
        load_config(_write(tmp_path, "model: {neck: {type: fpn}, head: {type: fast_rcnn_fpn},"
                                     " backbone: {res5_dilation: 1}}\n"))
    with pytest.raises(ConfigError, match=r"model\.rpn\.anchor_sizes: not a field of the 'c4'"):
        load_config(FPN_DEMO, ["model.rpn.type=c4"])
    with pytest.raises(ConfigError, match=r"model\.neck\.type: the FPN detector needs"):
        load_config(_write(tmp_path, "model: {head: {type: fast_rcnn_fpn}}\n"))
    path = os.path.join(CONFIG_DIR, "faster_rcnn", "faster_rcnn_r101_coco.yaml")
    with pytest.raises(ConfigError, match=r"model\.rpn\.type: the FPN detector needs .*got "
                                          r"neck 'fpn', rpn 'c4', head 'fast_rcnn'"):
        load_config(path, ["model.neck={type: fpn}"])


def test_fields_of_the_other_architecture_are_errors():
    with pytest.raises(ConfigError, match=r"model\.rpn\.anchor_stride: not a field of the "
                                          r"'fpn' RPN \(model\.rpn\.type\); it belongs to the "
                                          r"'c4' RPN"):
        load_config(FPN_DEMO, ["model.rpn.anchor_stride=16"])
    with pytest.raises(ConfigError, match=r"model\.head\.in_feature: not a field of the "
                                          r"'fast_rcnn_fpn' head"):
        load_config(FPN_DEMO, ["model.head.in_feature=res5"])
    with pytest.raises(ConfigError, match=r"model\.rpn\.anchor_sizes: not a field of the 'c4'"):
        load_config(os.path.join(CONFIG_DIR, "demo", "rfcn_dcn_synthetic.yaml"),
                    ["model.rpn.anchor_sizes=[32]"])
    with pytest.raises(ConfigError, match=r"model\.neck\.out_channels: not a field of the "
                                          r"'none' neck"):
        load_config(os.path.join(CONFIG_DIR, "demo", "rfcn_dcn_synthetic.yaml"),
                    ["model.neck.out_channels=64"])


def test_anchor_sizes_one_per_level():
    with pytest.raises(ConfigError, match=r"model\.rpn\.anchor_sizes: \[32\.0, 64\.0\] must give "
                                          r"one size per FPN level"):
        load_config(FPN_DEMO, ["model.rpn.anchor_sizes=[32, 64]"])


def test_fpn_rpn_defaults_are_detectron2s():
    r = FPNRPNConfig()
    assert (r.conv_channels, r.objectness, r.anchor_sizes, r.anchor_offset) == \
        (256, "sigmoid", (32.0, 64.0, 128.0, 256.0, 512.0), 0.0)
    assert (r.pre_nms_topk_train, r.post_nms_topk_train, r.pre_nms_topk_test,
            r.post_nms_topk_test, r.smooth_l1_beta) == (2000, 1000, 1000, 1000, 0.0)


def test_config_round_trip_keeps_the_fpn_sections():
    from dcn_det.config import config_from_dict, dump
    import yaml
    cfg = load_config(FPN_DEMO)
    again = config_from_dict(yaml.safe_load(dump(cfg)))
    assert again == cfg and again.model.arch == "faster_rcnn_fpn"


def test_full_size_r50_fpn_has_torchvisions_parameter_count():
    """torchvision's fasterrcnn_resnet50_fpn(num_classes=81, no pretrained weights) has
    41,757,156 parameters: ours, the same network, has 53,120 fewer (ResNet-50's BatchNorm
    affine parameters, which are frozen buffers here) and 4 * 1025 fewer (torchvision also
    regresses a box for the background class): 41,699,936."""
    cfg = load_config(os.path.join(CONFIG_DIR, "faster_rcnn_fpn", "faster_rcnn_fpn_r50_coco.yaml"))
    with torch.device("meta"):
        model = build_model(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == 41_757_156 - 53_120 - 4 * 1025
    assert model.rpn.anchor_generator.num_anchors == 3
    # Deformable pooling adds one offset fc (256*7*7 -> 2*7*7) per level P2-P5.
    cfg = load_config(os.path.join(CONFIG_DIR, "faster_rcnn_fpn",
                                   "faster_rcnn_fpn_r50_dpool_coco.yaml"))
    with torch.device("meta"):
        dpool = build_model(cfg.model)
    extra = sum(p.numel() for p in dpool.parameters()) - sum(p.numel() for p in model.parameters())
    assert extra == 4 * (256 * 49 * 98 + 98)
