"""mmdetection Faster R-CNN FPN checkpoints (``faster-rcnn_r50_fpn_1x_coco`` and its DCN
variants) written from a dcn_det detector reference, with mmdetection's real key set.

The key list is enumerated here from mmdetection's module structure (ResNet-50 with 3, 4, 6, 3
Bottlenecks, ``FPN`` of ``ConvModule``s, ``RPNHead``, ``Shared2FCBBoxHead``), independently of
``dcn_det.weights.mmdet_fpn``; each key is then filled from the reference through a hand-written
inverse of the documented mapping, so a test compares two readings of the layouts.
"""
from typing import Dict, List, Optional, Sequence

import torch

COUNTS_50 = (3, 4, 6, 3)
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

PYTORCH_FPN_CONFIG = """model = dict(
    type='FasterRCNN',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type='ResNet', depth=50, num_stages=4, out_indices=(0, 1, 2, 3),
                  frozen_stages=1, norm_cfg=dict(type='BN', requires_grad=True),
                  norm_eval=True, style='pytorch'{dcn}),
    neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
    rpn_head=dict(type='RPNHead', in_channels=256, feat_channels=256,
                  anchor_generator=dict(type='AnchorGenerator', scales=[8],
                                        ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]),
                  loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    roi_head=dict(type='StandardRoIHead',
                  bbox_roi_extractor=dict(type='SingleRoIExtractor',
                                          roi_layer=dict(type='RoIAlign', output_size=7,
                                                         sampling_ratio=0),
                                          out_channels=256, featmap_strides=[4, 8, 16, 32]),
                  bbox_head=dict(type='Shared2FCBBoxHead', in_channels=256, fc_out_channels=1024,
                                 roi_feat_size=7, num_classes=80,
                                 bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                                                 target_stds=[0.1, 0.1, 0.2, 0.2]),
                                 reg_class_agnostic=False)))
"""
DCN = (",\n                  dcn=dict(type='{kind}', deform_groups=1, fallback_on_stride=False),"
       "\n                  stage_with_dcn=(False, True, True, True)")


def config_text(dcn: Optional[str] = None, caffe: bool = False) -> str:
    """The training config mmdetection stores in ``meta['cfg']``; ``dcn``: 'DCN' / 'DCNv2'."""
    text = PYTORCH_FPN_CONFIG.format(dcn=DCN.format(kind=dcn) if dcn else "")
    if caffe:
        text = (text.replace("style='pytorch'", "style='caffe'")
                .replace("mean=[123.675, 116.28, 103.53]", "mean=[103.53, 116.28, 123.675]")
                .replace("std=[58.395, 57.12, 57.375]", "std=[1.0, 1.0, 1.0]")
                .replace("bgr_to_rgb=True", "bgr_to_rgb=False"))
    return text


def r50_fpn_keys(dcn_stages: Sequence[int] = ()) -> List[str]:
    """Every key of mmdetection's Faster R-CNN R-50-FPN ``state_dict`` (``dcn_stages``: the
    stages 2..5 whose 3x3 convs are mmcv DCN/DCNv2, with a ``conv2.conv_offset``)."""
    keys = ["backbone.conv1.weight"] + [f"backbone.bn1.{f}" for f in BN]
    for stage, count in zip(range(2, 6), COUNTS_50):
        for b in range(count):
            p = f"backbone.layer{stage - 1}.{b}."
            for i in (1, 2, 3):
                keys.append(f"{p}conv{i}.weight")
                if i == 2 and stage in dcn_stages:
                    keys += [f"{p}conv2.conv_offset.weight", f"{p}conv2.conv_offset.bias"]
                keys += [f"{p}bn{i}.{f}" for f in BN]
            if b == 0:
                keys.append(f"{p}downsample.0.weight")
                keys += [f"{p}downsample.1.{f}" for f in BN]
    for kind in ("lateral_convs", "fpn_convs"):
        keys += [f"neck.{kind}.{i}.conv.{f}" for i in range(4) for f in ("weight", "bias")]
    keys += [f"rpn_head.{m}.{f}" for m in ("rpn_conv", "rpn_cls", "rpn_reg")
             for f in ("weight", "bias")]
    keys += [f"roi_head.bbox_head.{m}.{f}" for m in ("fc_cls", "fc_reg", "shared_fcs.0",
                                                     "shared_fcs.1") for f in ("weight", "bias")]
    return keys


_NECK = {"lateral_convs": "lateral_convs", "fpn_convs": "output_convs"}
_HEADS = {"rpn_head.rpn_conv": "rpn.head.conv", "rpn_head.rpn_cls": "rpn.head.cls_logits",
          "rpn_head.rpn_reg": "rpn.head.bbox_pred",
          "roi_head.bbox_head.shared_fcs.0": "roi_heads.box_head.fc1",
          "roi_head.bbox_head.shared_fcs.1": "roi_heads.box_head.fc2",
          "roi_head.bbox_head.fc_cls": "roi_heads.box_head.cls_score",
          "roi_head.bbox_head.fc_reg": "roi_heads.box_head.bbox_pred"}


def our_name(key: str) -> str:
    """dcn_det's name of mmdetection ``key`` (the documented mapping, written out by hand)."""
    if key.startswith("backbone."):
        return key
    if key.startswith("neck."):
        _, kind, level, _, field = key.split(".")
        return f"neck.{_NECK[kind]}.{level}.{field}"
    module, field = key.rsplit(".", 1)
    return f"{_HEADS[module]}.{field}"


def checkpoint(ref: Dict[str, torch.Tensor], dcn_stages: Sequence[int] = (),
               dcn: Optional[str] = None, caffe: bool = False, num_classes: int = 80,
               extra: Optional[Dict[str, torch.Tensor]] = None) -> dict:
    """An mmdetection 3 checkpoint ``{"meta", "state_dict"}`` of detector reference ``ref``.

    Background last in ``fc_cls`` and no background slot in ``fc_reg`` (mmdetection >= 2.0),
    exactly dcn_det's layout, so the values are ``ref``'s; a caffe-style file has its stem in
    BGR (input channels reversed). ``extra`` adds keys (refused variants).
    """
    state = {}
    for key in r50_fpn_keys(dcn_stages):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
            continue
        value = ref[our_name(key)].clone()
        state[key] = value.flip(1) if caffe and key == "backbone.conv1.weight" else value
    state.update(extra or {})
    meta = {"mmdet_version": "3.3.0", "epoch": 12, "cfg": config_text(dcn, caffe),
            "dataset_meta": {"classes": [f"c{i}" for i in range(num_classes)]}}
    return {"meta": meta, "state_dict": state}


def dpool_offset_fcs(channels: int, pooled: int = 7, hidden: int = 8) -> Dict[str, torch.Tensor]:
    """mmcv ``DeformRoIPoolPack`` offset MLPs of the ``dpool`` variant, one per level."""
    out = {}
    for level in range(4):
        p = f"roi_head.bbox_roi_extractor.roi_layers.{level}.offset_fc."
        for i, (o, n) in ((0, (hidden, channels * pooled * pooled)), (2, (hidden, hidden)),
                          (4, (2 * pooled * pooled, hidden))):
            out[f"{p}{i}.weight"], out[f"{p}{i}.bias"] = torch.randn(o, n), torch.randn(o)
    return out
