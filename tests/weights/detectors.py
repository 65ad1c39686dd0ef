"""Tiny detectors for the whole-detector tests (tiny_detector.yaml and overrides)."""
import os

import torch

from dcn_det.config import load_config
from dcn_det.modeling import build_model

TINY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_detector.yaml")
# The official R-FCN DCN layout at width 1/8: ResNet-101, deformable res5 with 4 offset groups,
# 7x7 position-sensitive maps, 12 anchors, the 80 COCO classes.
R101_DCN = ("model.backbone.depth=101", "model.backbone.norm=frozen_bn",
            "model.backbone.deform_stages=[res5]", "model.backbone.deform_offset_groups=4")
RFCN_COCO = R101_DCN + ("model.num_classes=80", "model.head.group_size=7",
                        "model.head.pooled_size=7", "model.rpn.anchor_scales=[4,8,16,32]")
FASTER_COCO = R101_DCN + ("model.num_classes=80", "model.head.type=fast_rcnn",
                          "model.head.pooler=deformable", "model.head.conv_channels=16",
                          "model.head.fc_dim=32", "model.head.class_agnostic_bbox=true",
                          "model.head.pooled_size=7", "model.rpn.anchor_scales=[4,8,16,32]")


def config(*overrides):
    return load_config(TINY, list(overrides))


def detector(*overrides, seed: int = 0):
    """``(cfg, model)``; ``seed`` fixes the model's initialisation."""
    cfg = config(*overrides)
    torch.manual_seed(seed)
    return cfg, build_model(cfg.model)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
