"""Detection models. ``build_model(cfg.model)`` is the one entry point."""
from dcn_det.modeling.backbone import build_backbone
from dcn_det.modeling.detector import TwoStageDetector
from dcn_det.modeling.heads import build_box_head, build_fpn_box_head
from dcn_det.modeling.heads.roi_heads import RoIHeads
from dcn_det.modeling.neck import FPN
from dcn_det.modeling.neck.fpn import IN_FEATURES as FPN_IN_FEATURES
from dcn_det.modeling.rpn import RPN, FPNAnchorGenerator

# The FPN levels the RPN and the box head read.
FPN_RPN_FEATURES = ("p2", "p3", "p4", "p5", "p6")
FPN_HEAD_FEATURES = ("p2", "p3", "p4", "p5")


def build_model(cfg_model, with_pretrained: bool = True) -> TwoStageDetector:
    """Builds the detector described by a ``ModelConfig``.

    Args:
        cfg_model: ``cfg.model`` (num_classes, pixel stats, backbone, neck, rpn, head); the
            neck's type makes it single-scale or FPN, the head section's ``type`` R-FCN or
            Faster R-CNN.
        with_pretrained: load ``model.backbone.pretrained`` into the backbone; False when a
            state dict replaces every weight right after (a resumed run, an inference
            file), so that file is not needed where it is not used.

    Returns:
        A :class:`TwoStageDetector` in training mode.
    """
    if cfg_model.neck.type == "fpn":
        return _build_fpn(cfg_model, with_pretrained)
    backbone = build_backbone(cfg_model.backbone, pixel_mean=cfg_model.pixel_mean,
                              pixel_std=cfg_model.pixel_std, with_pretrained=with_pretrained)
    r, h = cfg_model.rpn, cfg_model.head
    if r.type != "c4" or h.type == "fast_rcnn_fpn":
        raise ValueError(f"model.neck.type 'none' needs model.rpn.type 'c4' and an rfcn or "
                         f"fast_rcnn head, got rpn {r.type!r}, head {h.type!r}")
    for key, name in (("model.rpn.in_feature", r.in_feature), ("model.head.in_feature", h.in_feature)):
        if name not in backbone.out_channels:
            raise ValueError(f"{key}={name!r} is not a backbone output; "
                             f"available: {sorted(backbone.out_channels)}")
    if backbone.out_strides[r.in_feature] != r.anchor_stride:
        raise ValueError(
            f"model.rpn.anchor_stride={r.anchor_stride} but backbone feature {r.in_feature!r} "
            f"has stride {backbone.out_strides[r.in_feature]}; they must be equal")
    rpn = _build_rpn(r, in_channels=backbone.out_channels[r.in_feature],
                     anchor_stride=r.anchor_stride, anchor_scales=r.anchor_scales)
    box_head = build_box_head(h, in_channels=backbone.out_channels[h.in_feature],
                              num_classes=cfg_model.num_classes,
                              feature_stride=backbone.out_strides[h.in_feature])
    return TwoStageDetector(
        backbone=backbone, rpn=rpn, roi_heads=_build_roi_heads(h, box_head, cfg_model.num_classes),
        pixel_mean=cfg_model.pixel_mean, pixel_std=cfg_model.pixel_std,
        size_divisibility=cfg_model.size_divisibility, rpn_in_feature=r.in_feature,
        head_in_feature=h.in_feature)


def _build_fpn(cfg_model, with_pretrained: bool) -> TwoStageDetector:
    """The FPN detector: ResNet res2-res5 -> FPN P2-P6 -> RPN on P2-P6 -> head on P2-P5."""
    r, h = cfg_model.rpn, cfg_model.head
    if r.type != "fpn" or h.type != "fast_rcnn_fpn":
        raise ValueError(f"model.neck.type 'fpn' needs model.rpn.type 'fpn' and model.head.type "
                         f"'fast_rcnn_fpn', got rpn {r.type!r}, head {h.type!r}")
    backbone = build_backbone(cfg_model.backbone, pixel_mean=cfg_model.pixel_mean,
                              pixel_std=cfg_model.pixel_std, out_features=FPN_IN_FEATURES,
                              with_pretrained=with_pretrained)
    neck = FPN(in_channels=[backbone.out_channels[n] for n in FPN_IN_FEATURES],
               in_strides=[backbone.out_strides[n] for n in FPN_IN_FEATURES],
               out_channels=cfg_model.neck.out_channels)
    if len(r.anchor_sizes) != len(FPN_RPN_FEATURES):
        raise ValueError(f"model.rpn.anchor_sizes needs one size per level "
                         f"{list(FPN_RPN_FEATURES)}, got {list(r.anchor_sizes)}")
    anchors = FPNAnchorGenerator(r.anchor_sizes, [neck.out_strides[n] for n in FPN_RPN_FEATURES],
                                 r.anchor_ratios, offset=r.anchor_offset)
    # detectron2's BOUNDARY_THRESH = -1: anchors crossing the image border are kept.
    rpn = _build_rpn(r, in_channels=cfg_model.neck.out_channels, anchor_generator=anchors,
                     allowed_border=None)
    box_head = build_fpn_box_head(h, in_channels=cfg_model.neck.out_channels,
                                  num_classes=cfg_model.num_classes,
                                  strides=[neck.out_strides[n] for n in FPN_HEAD_FEATURES])
    return TwoStageDetector(
        backbone=backbone, neck=neck, rpn=rpn,
        roi_heads=_build_roi_heads(h, box_head, cfg_model.num_classes),
        pixel_mean=cfg_model.pixel_mean, pixel_std=cfg_model.pixel_std,
        size_divisibility=cfg_model.size_divisibility, rpn_in_feature=FPN_RPN_FEATURES,
        head_in_feature=FPN_HEAD_FEATURES)


def _build_rpn(r, in_channels: int, **kwargs) -> RPN:
    """The RPN from the fields both RPN sections share, plus the architecture's own."""
    return RPN(
        in_channels=in_channels, conv_channels=r.conv_channels, anchor_ratios=r.anchor_ratios,
        objectness=r.objectness, batch_size_per_image=r.batch_size_per_image,
        positive_fraction=r.positive_fraction, fg_iou=r.fg_iou, bg_iou=r.bg_iou,
        pre_nms_topk_train=r.pre_nms_topk_train, post_nms_topk_train=r.post_nms_topk_train,
        pre_nms_topk_test=r.pre_nms_topk_test, post_nms_topk_test=r.post_nms_topk_test,
        nms_thresh=r.nms_thresh, min_size=r.min_size, box_loss_weight=r.box_loss_weight,
        smooth_l1_beta=r.smooth_l1_beta, **kwargs)


def _build_roi_heads(h, box_head, num_classes: int) -> RoIHeads:
    return RoIHeads(
        box_head=box_head, num_classes=num_classes,
        batch_size_per_image=h.batch_size_per_image, positive_fraction=h.positive_fraction,
        fg_iou=h.fg_iou, bg_iou_hi=h.bg_iou_hi, bg_iou_lo=h.bg_iou_lo, ohem=h.ohem,
        box_coder_stds=h.box_coder_stds, smooth_l1_beta=h.smooth_l1_beta,
        score_thresh=h.score_thresh, nms_thresh=h.nms_thresh,
        detections_per_image=h.detections_per_image)


__all__ = ["TwoStageDetector", "build_model"]
