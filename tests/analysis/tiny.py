"""Tiny models and helpers for the offset-analysis tests."""
import importlib.util
import os

import torch

from dcn_det.config import load_config
from dcn_det.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = {"rfcn": os.path.join(ROOT, "configs/demo/rfcn_dcn_synthetic.yaml"),
        "faster_rcnn": os.path.join(ROOT, "configs/demo/faster_rcnn_dcn_synthetic.yaml")}
# ResNet-18 at width 0.125, small RPN and head, 3 classes, ~96 px images: a forward pass on the
# CPU takes a few tens of milliseconds.
TINY = ["model.backbone.depth=18", "model.backbone.width_mult=0.125", "model.backbone.norm=bn",
        "model.backbone.pretrained=''", "model.rpn.conv_channels=16",
        "model.rpn.pre_nms_topk_test=200", "model.rpn.post_nms_topk_test=50",
        "model.head.conv_channels=32", "model.num_classes=3",
        "data.min_size_test=96", "data.max_size_test=128", "data.num_workers=0",
        "data.test.synthetic.num_classes=3", "data.test.synthetic.image_size=[96,128]",
        "data.test.synthetic.min_object_size=12", "data.test.synthetic.num_images=4",
        "runtime.device=cpu"]
NAMES = ["disc", "square", "triangle"]


# Shrinks the Faster R-CNN head's own fc layers too.
TINY_FAST_RCNN = ["model.head.fc_dim=32"]


def tiny_config(arch="rfcn", extra=()):
    small = TINY + (TINY_FAST_RCNN if arch == "faster_rcnn" else [])
    return load_config(DEMO[arch], small + list(extra))


def tiny_model(arch="rfcn", extra=(), offset_std=0.02, seed=0):
    """A random-weight detector; ``offset_std`` > 0 gives its offset layers random weights
    (they are zero-initialised, i.e. a plain network, otherwise)."""
    cfg = tiny_config(arch, extra)
    torch.manual_seed(seed)
    model = build_model(cfg.model).eval()
    if offset_std:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "offset" in name:
                    p.normal_(0.0, offset_std)
    return model, cfg


def load_tool(name):
    """Imports ``tools/<name>.py`` as a module (its ``main(argv)`` runs in this process)."""
    spec = importlib.util.spec_from_file_location(f"_tool_{name}",
                                                  os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
