"""Box heads: R-FCN and Faster R-CNN, and ``build_box_head`` mapping a head config onto them.

The heads share one interface: ``forward(feature (N, C, H, W), rois (R, 5)) ->
(cls_logits (R, K+1), box_deltas (R, B, 4))`` with background at class index K and B = 1 for a
class-agnostic regressor, else K; the FPN head takes the list of levels P2-P5 as ``feature``.
"""
from torch import nn

from .fast_rcnn_head import FastRCNNHead
from .fpn_head import FPNFastRCNNHead
from .rfcn_head import RFCNHead

__all__ = ["FastRCNNHead", "FPNFastRCNNHead", "RFCNHead", "build_box_head",
           "build_fpn_box_head"]


def build_box_head(cfg_head, in_channels: int, num_classes: int,
                   feature_stride: int) -> nn.Module:
    """Builds the box head that ``cfg_head.type`` names.

    Args:
        cfg_head: the ``model.head`` section, an ``RFCNHeadConfig`` or a
            ``FastRCNNHeadConfig``. Read here: type, conv_channels, conv_lr_mult,
            pooled_size, sample_per_part, trans_std, offset_lr_mult, class_agnostic_bbox,
            hidden_init; R-FCN also deformable, group_size, score_lr_mult; Faster R-CNN also
            pooler, fc_dim. The learning-rate
            multipliers are passed as configured, so a config states the official values itself (R-FCN: conv 3.0, offsets 1.0;
            Faster R-CNN: conv 1.0, offset fc 0.01).
        in_channels: channels of the backbone feature the head reads (``cfg_head.in_feature``).
        num_classes: K object classes, background excluded.
        feature_stride: stride of that feature in input-image pixels (16 for res5 with
            dilation); the pooling's spatial scale is its inverse.

    Returns:
        An ``RFCNHead`` or a ``FastRCNNHead``.
    """
    if isinstance(feature_stride, bool) or not isinstance(feature_stride, int) \
            or feature_stride <= 0:
        raise ValueError(f"feature_stride must be a positive int, got {feature_stride!r}")
    common = dict(
        in_channels=in_channels, num_classes=num_classes,
        conv_channels=cfg_head.conv_channels, conv_lr_mult=cfg_head.conv_lr_mult,
        pooled_size=cfg_head.pooled_size, sample_per_part=cfg_head.sample_per_part,
        trans_std=cfg_head.trans_std, spatial_scale=1.0 / feature_stride,
        class_agnostic_bbox=cfg_head.class_agnostic_bbox,
        offset_lr_mult=cfg_head.offset_lr_mult, hidden_init=cfg_head.hidden_init)
    if cfg_head.type == "rfcn":
        return RFCNHead(deformable=cfg_head.deformable, group_size=cfg_head.group_size,
                        score_lr_mult=cfg_head.score_lr_mult, **common)
    if cfg_head.type == "fast_rcnn":
        return FastRCNNHead(pooler=cfg_head.pooler, fc_dim=cfg_head.fc_dim, **common)
    raise ValueError(f"model.head.type must be 'rfcn' or 'fast_rcnn', got {cfg_head.type!r}")


def build_fpn_box_head(cfg_head, in_channels: int, num_classes: int,
                       strides) -> FPNFastRCNNHead:
    """Builds the FPN box head of a ``FPNFastRCNNHeadConfig`` (``model.head``).

    Args:
        cfg_head: read here: pooler, pooled_size, sampling_ratio, sample_per_part, trans_std,
            offset_lr_mult, fc_dim, class_agnostic_bbox, hidden_init.
        in_channels: channels of the pyramid levels (``model.neck.out_channels``).
        num_classes: K object classes, background excluded.
        strides: strides of P2-P5.
    """
    if cfg_head.type != "fast_rcnn_fpn":
        raise ValueError(f"model.head.type must be 'fast_rcnn_fpn' for an FPN detector, got "
                         f"{cfg_head.type!r}")
    return FPNFastRCNNHead(
        in_channels=in_channels, num_classes=num_classes, strides=tuple(strides),
        pooler=cfg_head.pooler, pooled_size=cfg_head.pooled_size,
        sampling_ratio=cfg_head.sampling_ratio, sample_per_part=cfg_head.sample_per_part,
        trans_std=cfg_head.trans_std, offset_lr_mult=cfg_head.offset_lr_mult,
        fc_dim=cfg_head.fc_dim, class_agnostic_bbox=cfg_head.class_agnostic_bbox,
        hidden_init=cfg_head.hidden_init)
