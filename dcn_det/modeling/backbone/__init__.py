"""Backbones: ``build_backbone(cfg.model.backbone)`` -> ResNet."""
from typing import Optional, Sequence

from dcn_det.modeling.backbone.resnet import ResNet
from dcn_det.weights import LoadReport, check_pixel_stats, load_pretrained

__all__ = ["ResNet", "LoadReport", "load_pretrained", "build_backbone"]

# The single-scale detector's RPN reads res4 and its head res5 (DESIGN 3); FPN reads res2-res5.
OUT_FEATURES = ("res4", "res5")


def build_backbone(cfg_backbone, pixel_mean: Optional[Sequence[float]] = None,
                   pixel_std: Optional[Sequence[float]] = None,
                   out_features: Sequence[str] = OUT_FEATURES,
                   with_pretrained: bool = True) -> ResNet:
    """Builds the ResNet a BackboneConfig describes, loading pretrained weights if it names any.

    Args:
        cfg_backbone: a ``BackboneConfig`` (see ``dcn_det.config``); only its attributes are
            read: depth, width_mult, stride_in_1x1, norm, gn_groups, freeze_at,
            res5_dilation, deform_stages, deform_modulated, deform_offset_groups,
            deform_offset_lr_mult, deform_offset_mode, stem_pool, pretrained,
            pretrained_format, pretrained_min_fill.
        pixel_mean, pixel_std: the detector's input normalisation (``model.pixel_mean/std``,
            RGB, 0-255 scale); when given, a warning says if the weights were trained with
            other values.
        out_features: the stages returned: ``("res4", "res5")`` for the single-scale
            detectors, ``("res2", "res3", "res4", "res5")`` for FPN.
        with_pretrained: load ``pretrained``; False when every weight comes from elsewhere
            (a checkpoint being resumed, an inference file), so the file is not read at all.

    Returns:
        A ResNet returning ``out_features``, with ``out_channels`` and ``out_strides``.
    """
    model = ResNet(
        depth=cfg_backbone.depth,
        width_mult=cfg_backbone.width_mult,
        stride_in_1x1=cfg_backbone.stride_in_1x1,
        norm=cfg_backbone.norm,
        gn_groups=cfg_backbone.gn_groups,
        freeze_at=cfg_backbone.freeze_at,
        res5_dilation=cfg_backbone.res5_dilation,
        deform_stages=list(cfg_backbone.deform_stages),
        deform_modulated=cfg_backbone.deform_modulated,
        deform_offset_groups=cfg_backbone.deform_offset_groups,
        deform_offset_lr_mult=cfg_backbone.deform_offset_lr_mult,
        deform_offset_mode=cfg_backbone.deform_offset_mode,
        out_features=tuple(out_features),
        stem_pool=cfg_backbone.stem_pool,
    )
    if cfg_backbone.pretrained and with_pretrained:
        report = load_pretrained(model, cfg_backbone.pretrained,
                                 format=cfg_backbone.pretrained_format,
                                 min_fill=cfg_backbone.pretrained_min_fill)
        check_pixel_stats(report, pixel_mean, pixel_std)
    return model
