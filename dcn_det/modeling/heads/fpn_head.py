"""The Faster R-CNN box head on FPN levels (detectron2's ``FastRCNNConvFCHead`` with two fc
layers, and the official Deformable FPN's head):

    RoI -> its level of P2-P5 -> 7x7 pooling (RoIAlign / deformable / plain) -> (R, 256, 7, 7)
        -> fc 1024 + relu -> fc 1024 + relu -> classifier (K+1) and box regressor (4*B)

There is no 1x1 conv before the pooling (the pyramid is already 256 wide), unlike the C4 head.
Background is the LAST class (index K).
"""
from typing import Sequence

import torch
from torch import nn

from dcn_det.modeling.heads.common import check_hidden_init, check_positive, init_hidden
from dcn_det.modeling.heads.multilevel_pool import MultiLevelRoIPool


class FPNFastRCNNHead(nn.Module):
    """2fc box head pooling each RoI from one FPN level.

    Args:
        in_channels: channels C of every pyramid level (256).
        num_classes: K object classes, background excluded.
        strides: strides of the pooled levels P2-P5 (4, 8, 16, 32).
        pooler: ``"roi_align"``, ``"deformable"`` or ``"psroi_plain"`` (see
            :class:`MultiLevelRoIPool`).
        pooled_size: P, bins per side (7).
        sampling_ratio: RoIAlign samples per bin side, 0 = adaptive.
        sample_per_part, trans_std, offset_lr_mult: of the PS-RoI poolers (4, 0.1, 0.01).
        fc_dim: width of the two hidden fc layers (1024).
        class_agnostic_bbox: one box per RoI (True) or one per class (False, detectron2 and
            the official Deformable FPN).
        hidden_init: ``"official"`` = N(0, 0.01) for fc1 and fc2 (the official Deformable
            FPN's ``init_weight_rcnn``); ``"kaiming"`` = He-normal (random backbones).
            The classifier and the box regressor are N(0, 0.01), biases zero.
    """

    def __init__(self, *, in_channels: int, num_classes: int, strides: Sequence[int],
                 pooler: str = "roi_align", pooled_size: int = 7, sampling_ratio: int = 0,
                 sample_per_part: int = 4, trans_std: float = 0.1, offset_lr_mult: float = 0.01,
                 fc_dim: int = 1024, class_agnostic_bbox: bool = False,
                 hidden_init: str = "official"):
        super().__init__()
        check_hidden_init(hidden_init)
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("pooled_size", pooled_size), ("sample_per_part", sample_per_part),
                            ("fc_dim", fc_dim)):
            check_positive(name, value, integer=True)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.class_agnostic_bbox = class_agnostic_bbox
        self.num_boxes = 1 if class_agnostic_bbox else num_classes
        self.pooler = pooler
        self.pool = MultiLevelRoIPool(
            strides=strides, channels=in_channels, pooler=pooler, pooled_size=pooled_size,
            sampling_ratio=sampling_ratio, sample_per_part=sample_per_part,
            trans_std=trans_std, offset_lr_mult=offset_lr_mult)
        self.fc1 = nn.Linear(in_channels * pooled_size * pooled_size, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.cls_score = nn.Linear(fc_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(fc_dim, 4 * self.num_boxes)
        for layer in (self.fc1, self.fc2, self.cls_score, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        init_hidden([self.fc1, self.fc2], hidden_init)

    def forward(self, features: Sequence[torch.Tensor], rois: torch.Tensor):
        """Scores and box deltas for each RoI.

        Args:
            features: P2-P5, each ``(N, in_channels, H_l, W_l)``.
            rois: ``(R, 5)`` rows ``[batch_index, x1, y1, x2, y2]`` in input-image pixels.

        Returns:
            cls_logits: ``(R, K+1)``, background at index K.
            box_deltas: ``(R, B, 4)``; B = 1 when class-agnostic, else K.
        """
        if isinstance(features, torch.Tensor):
            raise ValueError("FPNFastRCNNHead needs the list of pyramid levels P2-P5, got one "
                             f"tensor {tuple(features.shape)}")
        pooled = self.pool(list(features), rois)
        x = torch.relu(self.fc1(pooled.flatten(1)))
        x = torch.relu(self.fc2(x))
        return self.cls_score(x), self.bbox_pred(x).reshape(rois.size(0), self.num_boxes, 4)
