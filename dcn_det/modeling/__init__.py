"""Detection models. ``build_model(cfg.model)`` is the one entry point."""
from dcn_det.modeling.backbone import build_backbone
from dcn_det.modeling.detector import TwoStageDetector
from dcn_det.modeling.heads import build_box_head
from dcn_det.modeling.heads.roi_heads import RoIHeads
from dcn_det.modeling.rpn import RPN


def build_model(cfg_model) -> TwoStageDetector:
    """Builds the detector described by a ``ModelConfig``.

    Args:
        cfg_model: ``cfg.model`` (num_classes, pixel stats, backbone, rpn, head); the
            head section's ``type`` makes it R-FCN or Faster R-CNN.

    Returns:
        A :class:`TwoStageDetector` in training mode.
    """
    backbone = build_backbone(cfg_model.backbone, pixel_mean=cfg_model.pixel_mean,
                              pixel_std=cfg_model.pixel_std)
    r, h = cfg_model.rpn, cfg_model.head
    for key, name in (("model.rpn.in_feature", r.in_feature), ("model.head.in_feature", h.in_feature)):
        if name not in backbone.out_channels:
            raise ValueError(f"{key}={name!r} is not a backbone output; "
                             f"available: {sorted(backbone.out_channels)}")
    if backbone.out_strides[r.in_feature] != r.anchor_stride:
        raise ValueError(
            f"model.rpn.anchor_stride={r.anchor_stride} but backbone feature {r.in_feature!r} "
            f"has stride {backbone.out_strides[r.in_feature]}; they must be equal")
    rpn = RPN(
        in_channels=backbone.out_channels[r.in_feature], conv_channels=r.conv_channels,
        anchor_stride=r.anchor_stride, anchor_scales=r.anchor_scales,
        anchor_ratios=r.anchor_ratios, objectness=r.objectness,
        batch_size_per_image=r.batch_size_per_image, positive_fraction=r.positive_fraction,
        fg_iou=r.fg_iou, bg_iou=r.bg_iou,
        pre_nms_topk_train=r.pre_nms_topk_train, post_nms_topk_train=r.post_nms_topk_train,
        pre_nms_topk_test=r.pre_nms_topk_test, post_nms_topk_test=r.post_nms_topk_test,
        nms_thresh=r.nms_thresh, min_size=r.min_size, box_loss_weight=r.box_loss_weight,
        smooth_l1_beta=r.smooth_l1_beta)
    box_head = build_box_head(h, in_channels=backbone.out_channels[h.in_feature],
                              num_classes=cfg_model.num_classes,
                              feature_stride=backbone.out_strides[h.in_feature])
    roi_heads = RoIHeads(
        box_head=box_head, num_classes=cfg_model.num_classes,
        batch_size_per_image=h.batch_size_per_image, positive_fraction=h.positive_fraction,
        fg_iou=h.fg_iou, bg_iou_hi=h.bg_iou_hi, bg_iou_lo=h.bg_iou_lo, ohem=h.ohem,
        box_coder_stds=h.box_coder_stds, smooth_l1_beta=h.smooth_l1_beta,
        score_thresh=h.score_thresh, nms_thresh=h.nms_thresh,
        detections_per_image=h.detections_per_image)
    return TwoStageDetector(
        backbone=backbone, rpn=rpn, roi_heads=roi_heads, pixel_mean=cfg_model.pixel_mean,
        pixel_std=cfg_model.pixel_std, size_divisibility=cfg_model.size_divisibility,
        rpn_in_feature=r.in_feature, head_in_feature=h.in_feature)


__all__ = ["TwoStageDetector", "build_model"]
