"""The Faster R-CNN box head of Deformable ConvNets (Dai et al. 2017), with three poolers.

This follows the official ``resnet_v1_101_rcnn_dcn`` symbol of msracver/Deformable-ConvNets:

    feature -> 1x1 conv to 256 + relu =: f
    f -> RoI pooling -> (R, 256, 7, 7) -> fc 1024 + relu -> fc 1024 + relu
      -> classifier (K+1) and box regressor (4*B)

Poolers:
    "deformable":  deformable RoI pooling (``deform_psroi_pool`` with group_size=1); the offsets
                   come from a zero-initialised fc (lr x0.01) on the same RoI pooled without
                   offsets, reshaped to (R, 2, 7, 7) and scaled by ``trans_std * roi_size``.
    "psroi_plain": the same pooling with no offsets (RoI average pooling over bilinear samples);
                   at initialisation "deformable" computes exactly this.
    "roi_align":   RoIAlign, 7x7 bins, 2x2 samples per bin, ``aligned=True``.

Background is the LAST class (index K). The class-agnostic regressor predicts one box (the
official head also keeps an untrained background slot, which changes nothing and is dropped).
"""
import torch
from torch import nn

from dcn_det.ops import DeformPSRoIPool, RoIAlign

from dcn_det.modeling.heads.common import (check_head_inputs, check_hidden_init, check_positive,
                                           init_hidden, rename_legacy_keys, zero_offset_layer)

POOLERS = ("deformable", "psroi_plain", "roi_align")


class FastRCNNHead(nn.Module):
    """Faster R-CNN (2fc) classification and box-regression head on one feature map.

    Args:
        in_channels: channels C of the input feature (e.g. 2048 for ResNet res5).
        num_classes: K object classes, background excluded.
        conv_channels: width of the 1x1 conv before pooling (official 256).
        pooler: "deformable", "psroi_plain" or "roi_align" (see the module docstring).
        pooled_size: P, output bins per side of the pooling (official 7).
        sample_per_part: bilinear samples per bin side for the two PS-RoI poolers (official 4).
        trans_std: scale of the normalised offsets (official 0.1).
        spatial_scale: feature size / input-image size (1/16 for output stride 16).
        fc_dim: width of the two hidden fc layers (official 1024).
        class_agnostic_bbox: one box per RoI (True) or one per class (False, official).
        offset_lr_mult: learning-rate multiplier of the offset fc (official 0.01).
        conv_lr_mult: learning-rate multiplier of the 1x1 conv (official 1.0).
        hidden_init: ``"official"`` = N(0, 0.01) for ``conv_new``, ``fc1`` and ``fc2``;
            ``"kaiming"`` = He-normal for them (for a randomly initialised backbone, see
            :func:`dcn_det.modeling.heads.rfcn_head.init_hidden`).
    """

    def __init__(self, *, in_channels: int, num_classes: int, conv_channels: int = 256,
                 pooler: str = "deformable", pooled_size: int = 7, sample_per_part: int = 4,
                 trans_std: float = 0.1, spatial_scale: float = 1.0 / 16, fc_dim: int = 1024,
                 class_agnostic_bbox: bool = False, offset_lr_mult: float = 0.01,
                 conv_lr_mult: float = 1.0, hidden_init: str = "official"):
        super().__init__()
        check_hidden_init(hidden_init)
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("conv_channels", conv_channels), ("pooled_size", pooled_size),
                            ("sample_per_part", sample_per_part), ("fc_dim", fc_dim)):
            check_positive(name, value, integer=True)
        for name, value in (("conv_lr_mult", conv_lr_mult), ("spatial_scale", spatial_scale)):
            check_positive(name, value, integer=False)
        if pooler not in POOLERS:
            raise ValueError(f"pooler must be one of {POOLERS}, got {pooler!r}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.pooler = pooler
        self.class_agnostic_bbox = class_agnostic_bbox
        self.num_boxes = 1 if class_agnostic_bbox else num_classes

        self.conv_new = nn.Conv2d(in_channels, conv_channels, kernel_size=1)
        self.conv_new.lr_mult = float(conv_lr_mult)
        if pooler == "roi_align":
            self.pool = RoIAlign(output_size=pooled_size, spatial_scale=spatial_scale,
                                 sampling_ratio=2, aligned=True)
        else:
            # group_size=1: every output channel reads its own input channel (not
            # position-sensitive), i.e. the deformable RoI pooling of the paper.
            self.pool = DeformPSRoIPool(
                spatial_scale=spatial_scale, output_dim=conv_channels, group_size=1,
                pooled_size=pooled_size, part_size=pooled_size,
                sample_per_part=sample_per_part, trans_std=trans_std)
        if pooler == "deformable":
            # Offsets from the RoI pooled without offsets (the official offset fc).
            self.offset_fc = zero_offset_layer(
                nn.Linear(conv_channels * pooled_size * pooled_size,
                          2 * pooled_size * pooled_size), offset_lr_mult)
        self.pooled_size = pooled_size
        self._register_load_state_dict_pre_hook(self._legacy_keys)
        self.fc1 = nn.Linear(conv_channels * pooled_size * pooled_size, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.cls_score = nn.Linear(fc_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(fc_dim, 4 * self.num_boxes)
        self._init_weights(hidden_init)

    def _init_weights(self, hidden_init: str) -> None:
        # Official init_weight_rcnn (resnet_v1_101_rcnn_dcn): N(0, 0.01) weights for every new
        # layer, the box regressor included (detectron's 0.001 is not the official value), and
        # zero biases. The offset fc is zero-initialised (zero_offset_layer).
        for layer in (self.conv_new, self.fc1, self.fc2, self.cls_score, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        init_hidden([self.conv_new, self.fc1, self.fc2], hidden_init)

    def offsets(self, f: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """The deformable RoI pooling offsets of each RoI (``pooler="deformable"`` only).

        Args:
            f: ``(N, conv_channels, H, W)`` = ``relu(conv_new(feature))``.
            rois: ``(R, 5)`` as in :meth:`forward`.

        Returns:
            ``(R, 2, P, P)`` normalised offsets (channel 0 x, 1 y), shared by all channels.
        """
        p = self.pooled_size
        return self.offset_fc(self.pool(f, rois).flatten(1)).view(-1, 2, p, p)

    @staticmethod
    def _legacy_keys(state_dict, prefix, *args):
        rename_legacy_keys(state_dict, prefix, {"pool.fc_offset": "offset_fc"})

    def forward(self, feature: torch.Tensor, rois: torch.Tensor):
        """Scores and box deltas for each RoI.

        Args:
            feature: (N, in_channels, H, W) backbone feature at ``spatial_scale`` of the image.
            rois: (R, 5) rows ``[batch_index, x1, y1, x2, y2]`` in input-image pixels (the
                padded, resized image the backbone saw).

        Returns:
            cls_logits: (R, K+1) unnormalised class scores, background at index K.
            box_deltas: (R, B, 4) encoded box deltas (dx, dy, dw, dh); B = 1 when class-agnostic,
                else K with the foreground classes in label order.
        """
        check_head_inputs(feature, rois, self.in_channels, type(self).__name__)
        f = torch.relu(self.conv_new(feature))
        if self.pooler == "deformable":
            pooled = self.pool(f, rois, self.offsets(f, rois))  # (R, conv_channels, P, P)
        else:
            pooled = self.pool(f, rois)
        x = torch.relu(self.fc1(pooled.flatten(1)))
        x = torch.relu(self.fc2(x))
        cls_logits = self.cls_score(x)
        box_deltas = self.bbox_pred(x).reshape(rois.size(0), self.num_boxes, 4)
        return cls_logits, box_deltas
