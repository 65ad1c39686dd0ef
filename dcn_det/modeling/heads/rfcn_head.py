"""The R-FCN box head with (deformable) position-sensitive RoI pooling (Dai et al. 2016, 2017).

This follows the official ``resnet_v1_101_rfcn_dcn`` symbol of msracver/Deformable-ConvNets:

    feature -> 1x1 conv to 1024 + relu (lr x3)  =: f
    f -> rfcn_cls  1x1 conv -> G*G*(K+1) score maps -> (deformable) PS-RoI pool -> (R, K+1, P, P)
    f -> rfcn_bbox 1x1 conv -> G*G*4*S box maps     -> (deformable) PS-RoI pool -> (R, 4*S, P, P)
    each pooled map is averaged over its P x P bins ("vote").

With ``deformable=True`` the head owns the official offset branch: zero-initialised 1x1 convs
on ``f`` give 2*G*G*(K+1) offset maps for the scores (``cls_offset``: one offset field per
class) and 2*G*G for the boxes (``bbox_offset``: one field shared by all box channels); these
are PS-RoI pooled without offsets into per-RoI normalised offsets (R, 2*C_off, P, P)
(:meth:`RFCNHead.offsets`) that shift the bins by ``offset * trans_std * roi_size``.

Class layout: background is the LAST class (index K), unlike the official code (index 0).
Box slots S: class-agnostic keeps the official two slots (foreground, background) and returns
the foreground one; class-specific has K+1 slots and returns the K foreground ones.
"""
import torch
from torch import nn

from dcn_det.modeling.heads.common import (check_head_inputs, check_hidden_init, check_positive,
                                           init_hidden, rename_legacy_keys, zero_offset_layer)
from dcn_det.ops import DeformPSRoIPool


class RFCNHead(nn.Module):
    """R-FCN classification and box-regression head on one feature map.

    Args:
        in_channels: channels C of the input feature (e.g. 2048 for ResNet res5).
        num_classes: K object classes, background excluded.
        conv_channels: width of the 1x1 conv that precedes the score maps (official 1024).
        conv_lr_mult: learning-rate multiplier of that conv (official 3.0), stored as its
            ``lr_mult`` attribute for the optimizer builder.
        deformable: deformable PS-RoI pooling (True) or plain PS-RoI pooling (False).
        group_size: G, the position-sensitive grid (official 7).
        pooled_size: P, output bins per side of the pooling (official 7).
        sample_per_part: bilinear samples per bin side (official 4).
        trans_std: scale of the normalised offsets (official 0.1).
        spatial_scale: feature size / input-image size (1/16 for output stride 16).
        class_agnostic_bbox: one box per RoI (True, official) or one per class.
        offset_lr_mult: learning-rate multiplier of the offset convs (the paper's default is 1.0;
            only the Faster R-CNN offset fc uses 0.01).
        score_lr_mult: learning-rate multiplier of the score and box maps (``rfcn_cls``,
            ``rfcn_bbox``); official 1.0. The vote averages G*G bins, so each map receives
            1/(G*G) of the gradient of its logit; a model trained from scratch in a few
            thousand iterations learns its classes much faster with ~G*G here.
        hidden_init: ``"official"`` = N(0, 0.01) for ``conv_new`` (fine on a pretrained
            backbone); ``"kaiming"`` = He-normal ``conv_new``, which a randomly initialised
            backbone needs (see :func:`init_hidden`).
    """

    def __init__(self, *, in_channels: int, num_classes: int, conv_channels: int = 1024,
                 conv_lr_mult: float = 3.0, deformable: bool = True, group_size: int = 7,
                 pooled_size: int = 7, sample_per_part: int = 4, trans_std: float = 0.1,
                 spatial_scale: float = 1.0 / 16, class_agnostic_bbox: bool = True,
                 offset_lr_mult: float = 1.0, hidden_init: str = "official",
                 score_lr_mult: float = 1.0):
        super().__init__()
        check_hidden_init(hidden_init)
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("conv_channels", conv_channels), ("group_size", group_size),
                            ("pooled_size", pooled_size), ("sample_per_part", sample_per_part)):
            check_positive(name, value, integer=True)
        for name, value in (("conv_lr_mult", conv_lr_mult), ("spatial_scale", spatial_scale),
                            ("score_lr_mult", score_lr_mult)):
            check_positive(name, value, integer=False)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.class_agnostic_bbox = class_agnostic_bbox
        self.deformable = deformable
        # Box slots in the score maps: the official agnostic head keeps bg + fg.
        self.num_box_slots = 2 if class_agnostic_bbox else num_classes + 1
        self.num_boxes = 1 if class_agnostic_bbox else num_classes

        self.conv_new = nn.Conv2d(in_channels, conv_channels, kernel_size=1)
        self.conv_new.lr_mult = float(conv_lr_mult)
        gg = group_size * group_size
        self.rfcn_cls = nn.Conv2d(conv_channels, gg * (num_classes + 1), kernel_size=1)
        self.rfcn_bbox = nn.Conv2d(conv_channels, gg * 4 * self.num_box_slots, kernel_size=1)
        if score_lr_mult != 1.0:  # only set when used, so the official model's groups are unchanged
            self.rfcn_cls.lr_mult = float(score_lr_mult)
            self.rfcn_bbox.lr_mult = float(score_lr_mult)

        common = dict(spatial_scale=spatial_scale, group_size=group_size,
                      pooled_size=pooled_size, part_size=pooled_size,
                      sample_per_part=sample_per_part, trans_std=trans_std)
        self.pool_cls = DeformPSRoIPool(output_dim=num_classes + 1, **common)
        self.pool_bbox = DeformPSRoIPool(output_dim=4 * self.num_box_slots, **common)
        if deformable:
            # One offset field per class for the scores; one field for all box channels.
            self.cls_offset = zero_offset_layer(
                nn.Conv2d(conv_channels, 2 * (num_classes + 1) * gg, 1), offset_lr_mult)
            self.bbox_offset = zero_offset_layer(nn.Conv2d(conv_channels, 2 * gg, 1),
                                                 offset_lr_mult)
            # The offset maps are PS-RoI pooled without offsets into per-RoI fields.
            self.pool_cls_offset = DeformPSRoIPool(output_dim=2 * (num_classes + 1), **common)
            self.pool_bbox_offset = DeformPSRoIPool(output_dim=2, **common)
        self._register_load_state_dict_pre_hook(self._legacy_keys)
        self._init_weights(hidden_init)

    def _init_weights(self, hidden_init: str) -> None:
        # Official init_weight_rfcn: N(0, 0.01) weights and zero biases; the offset convs are
        # zero-initialised (zero_offset_layer), so training starts from plain pooling.
        for conv in (self.conv_new, self.rfcn_cls, self.rfcn_bbox):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        init_hidden([self.conv_new], hidden_init)

    def offsets(self, f: torch.Tensor, rois: torch.Tensor):
        """The deformable pooling offsets of each RoI (``deformable=True`` only).

        Args:
            f: ``(N, conv_channels, H, W)`` = ``relu(conv_new(feature))``.
            rois: ``(R, 5)`` as in :meth:`forward`.

        Returns:
            ``cls_offset (R, 2*(K+1), P, P)`` (class ``c``'s field in channels ``2c`` (x) and
            ``2c+1`` (y)) and ``bbox_offset (R, 2, P, P)``, normalised (times ``trans_std``
            and the RoI size they move the bins by).
        """
        return (self.pool_cls_offset(self.cls_offset(f), rois),
                self.pool_bbox_offset(self.bbox_offset(f), rois))

    @staticmethod
    def _legacy_keys(state_dict, prefix, *args):
        rename_legacy_keys(state_dict, prefix, {"pool_cls.conv_offset": "cls_offset",
                                                "pool_bbox.conv_offset": "bbox_offset"})

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
        cls_offset, bbox_offset = self.offsets(f, rois) if self.deformable else (None, None)
        pooled_cls = self.pool_cls(self.rfcn_cls(f), rois, cls_offset)
        pooled_box = self.pool_bbox(self.rfcn_bbox(f), rois, bbox_offset)
        # Vote: average over the P x P position-sensitive bins.
        cls_logits = pooled_cls.mean(dim=(2, 3))
        box_deltas = pooled_box.mean(dim=(2, 3)).reshape(rois.size(0), self.num_box_slots, 4)
        # Slots are in label order with background last, so the first B are the foreground.
        return cls_logits, box_deltas[:, :self.num_boxes]
