"""The FPN part of mmdetection Faster R-CNN detectors (``faster-rcnn_r50_fpn_1x_coco`` and its
``dconv-c3-c5`` / ``mdconv_c3-c5`` variants) mapped onto dcn_det's FPN detector (DESIGN 5.1).

A file with ``neck.*`` keys is an FPN detector. Keys (mmdetection 2.x / 3.x ``FPN``,
``RPNHead``, ``Shared2FCBBoxHead``; the backbone and the RPN as in ``mmdet_detector.py``)::

    backbone.*                                 -> backbone.* (res2-res5; mmcv's DCN / DCNv2
                                                  ``conv2.conv_offset`` maps by name)
    neck.lateral_convs.{0-3}.conv.*            -> neck.lateral_convs.{0-3}.* (1x1 on res2-res5)
    neck.fpn_convs.{0-3}.conv.*                -> neck.output_convs.{0-3}.* (3x3, P2-P5)
    rpn_head.rpn_conv / rpn_cls / rpn_reg      -> rpn.head.conv / cls_logits / bbox_pred
                                                  (sigmoid, A = 3 anchors per cell, channel
                                                  ``a`` resp. ``4a + (dx, dy, dw, dh)``)
    roi_head.bbox_head.shared_fcs.{0,1}.*      -> roi_heads.box_head.fc1 / fc2 (input: the
                                                  7x7 RoIAlign output flattened ``(C, 7, 7)``)
    roi_head.bbox_head.fc_cls.*                -> roi_heads.box_head.cls_score (K+1 rows, the
                                                  background LAST since mmdetection 2.0)
    roi_head.bbox_head.fc_reg.*                -> roi_heads.box_head.bbox_pred (4K rows, class
                                                  k at rows 4k..4k+3, no background slot; 4
                                                  rows when ``reg_class_agnostic``)

Every layout above is dcn_det's, so nothing is permuted. mmdetection's FPN anchors
(``octave_base_scale=8``, strides 4-64, ratios (0.5, 1, 2), ``center_offset=0``, no rounding,
``scale_major``: ratio-major, position-major over the grid) are dcn_det's FPN anchors with
``model.rpn.anchor_offset: 0`` (the FPN configs' default): the same boxes in the same order.
Its RPN box coder has stds 1, its box head's (0.1, 0.1, 0.2, 0.2) (``model.head.box_coder_stds``
must stay at that); its RoI-to-level rule ``floor(log2(s / 56 + 1e-6))`` clamped to P2-P5 is
ours up to the epsilon; P6 is P5 max-pooled (kernel 1, stride 2) on both sides.

Refused, naming the key (no exact counterpart):

* ``neck.fpn_convs.4`` and up (``add_extra_convs``: P6 from a conv) and normalised FPN convs
  (``neck.*.bn`` / ``gn``);
* ``roi_head.bbox_roi_extractor.roi_layers.{i}.offset_fc.*`` / ``mask_fc.*``: the ``dpool`` /
  ``mdpool`` variants. mmcv's ``DeformRoIPoolPack`` predicts the offsets with a 3-layer MLP
  (``offset_fc.0/2/4``) and samples bilinearly like RoIAlign with ``gamma=0.1``; dcn_det (as the
  official Deformable ConvNets) has one offset fc on deformable PS-RoI pooling: neither the
  layers nor the pooled features correspond;
* any other ``roi_head.bbox_head.*`` (shared convs: ``Shared4Conv1FCBBoxHead``).

A Mask R-CNN's ``roi_head.mask_head.*`` is reported as not mapped (the box detector loads).
"""
import re
from typing import Dict, List

import torch

from dcn_det.weights.source import SourceWeights, WeightsError

_NECK = re.compile(r"^neck\.(lateral_convs|fpn_convs)\.([0-3])\.conv\.(weight|bias)$")
_NECK_OURS = {"lateral_convs": "neck.lateral_convs", "fpn_convs": "neck.output_convs"}
_BOX = "roi_head.bbox_head."
_BOX_MAP = {"shared_fcs.0.": "fc1.", "shared_fcs.1.": "fc2.", "fc_cls.": "cls_score.",
            "fc_reg.": "bbox_pred."}
_OURS = "roi_heads.box_head."
_NOT_MAPPED = ("roi_head.mask_head.", "roi_head.mask_roi_extractor.")


def is_fpn(state: Dict[str, torch.Tensor]) -> bool:
    """True for an mmdetection detector with an FPN neck (any ``neck.*`` key)."""
    return any(k.startswith("neck.") for k in state)


def _refuse(path: str, key: str, why: str) -> WeightsError:
    return WeightsError(f"mmdetection FPN checkpoint {path!r}: {key} has no exact counterpart "
                        f"in dcn_det's FPN detector ({why}); use model.backbone.pretrained for "
                        f"its backbone alone")


def map_fpn_heads(source: SourceWeights, state: Dict[str, torch.Tensor],
                  keys: List[str]) -> None:
    """Adds the neck and box-head tensors of ``keys`` to ``source`` (see the module docstring).

    Args:
        source: the detector being read (its ``path`` names the file in errors).
        state: the file's unwrapped state dict.
        keys: the file keys outside ``backbone.`` and ``rpn_head.``.

    Raises:
        WeightsError: a key without an exact counterpart, named.
    """
    for key in keys:
        neck = _NECK.match(key)
        if neck:
            kind, level, field = neck.groups()
            source.add(f"{_NECK_OURS[kind]}.{level}.{field}", state[key], key)
        elif key.startswith("neck."):
            raise _refuse(source.path, key, "dcn_det's FPN has 1x1 lateral and 3x3 output convs "
                                            "with bias on res2-res5 only, no normalisation, and "
                                            "P6 max-pooled from P5 (mmdetection "
                                            "add_extra_convs=False, norm_cfg=None)")
        elif key.startswith("roi_head.bbox_roi_extractor."):
            raise _refuse(source.path, key, "mmcv's DeformRoIPoolPack: a 3-layer offset MLP on "
                                            "RoIAlign-style pooling, vs one offset fc on "
                                            "deformable PS-RoI pooling here")
        elif key.startswith(_BOX):
            rest = key[len(_BOX):]
            prefix = next((p for p in _BOX_MAP if rest.startswith(p)), None)
            if prefix is None or rest[len(prefix):] not in ("weight", "bias"):
                raise _refuse(source.path, key, "dcn_det's FPN box head is 2 fc "
                                                "(Shared2FCBBoxHead) with fc_cls and fc_reg")
            source.add(_OURS + _BOX_MAP[prefix] + rest[len(prefix):], state[key], key)
        else:  # a mask head, anything else outside the detector
            source.not_mapped.append(key)
    if any(k.startswith(_NOT_MAPPED) for k in keys):
        source.notes.append("the mask head (roi_head.mask_head) has no counterpart in dcn_det "
                            "and is not loaded")
    source.notes.append("mmdetection's FPN anchors (corner-centred, sizes 32-512 px, ratios "
                        "0.5/1/2) are dcn_det's with model.rpn.anchor_offset 0; its box head "
                        "pools with RoIAlign (7x7, adaptive sampling, aligned), as "
                        "model.head.pooler roi_align does")
