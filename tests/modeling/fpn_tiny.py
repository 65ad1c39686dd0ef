"""Shrinks any FPN config (configs/faster_rcnn_fpn/*.yaml, the FPN demo) to a model whose
training step on two ~64x96 images takes well under a second."""
import os

import torch

from dcn_det.config import load_config
from dcn_det.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(ROOT, "configs")
FPN_DEMO = os.path.join(CONFIG_DIR, "demo", "faster_rcnn_fpn_dcn_synthetic.yaml")

TINY_FPN = ["model.backbone.depth=18", "model.backbone.width_mult=0.125",
            "model.backbone.pretrained=''", "model.neck.out_channels=16",
            "model.rpn.conv_channels=16", "model.rpn.pre_nms_topk_train=100",
            "model.rpn.post_nms_topk_train=40", "model.rpn.pre_nms_topk_test=100",
            "model.rpn.post_nms_topk_test=40", "model.rpn.batch_size_per_image=64",
            "model.head.fc_dim=32", "model.head.batch_size_per_image=32",
            "model.num_classes=3"]


def tiny_fpn(path: str = FPN_DEMO, extra=(), seed: int = 0):
    """``(model, cfg)``: the config at ``path`` shrunk by ``TINY_FPN``, in training mode."""
    cfg = load_config(path, TINY_FPN + list(extra))
    torch.manual_seed(seed)
    return build_model(cfg.model), cfg


def batch(seed: int = 0, sizes=((64, 96), (57, 83))):
    """Two uint8 images (the second with odd sides) and their targets (3 and 0 boxes)."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [40.0, 10.0, 90.0, 60.0],
                                       [10.0, 30.0, 26.0, 50.0]]),
                "labels": torch.tensor([0, 1, 2])},
               {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}]
    return images, targets
