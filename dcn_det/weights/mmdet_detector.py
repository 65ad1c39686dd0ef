"""mmdetection Faster R-CNN detectors mapped onto a whole dcn_det detector for
``model.weights`` (DESIGN 5.1): C4 (``faster_rcnn_r50_caffe_c4``-style, below) and FPN (a file
with ``neck.*`` keys: its neck and box head in ``mmdet_fpn.py``, the backbone, RPN and input
facts here).

Keys (after the ``state_dict`` wrapper)::

    backbone.{conv1,bn1,layer1..layer3}.*      -> backbone.* (the C4 backbone stops at res4)
    roi_head.shared_head.layer4.*              -> backbone.layer4.* (res5, run on each RoI there,
                                                  on the whole res4 map with dilation here)
    rpn_head.rpn_conv.{weight,bias}            -> rpn.head.conv.*
    rpn_head.rpn_cls.{weight,bias}             -> rpn.head.cls_logits.* (sigmoid: one logit per
                                                  anchor; the loader turns it into the softmax
                                                  pair (0, logit) for a softmax RPN, exactly)
    rpn_head.rpn_reg.{weight,bias}             -> rpn.head.bbox_pred.* (anchor-major, dx dy dw dh)
    roi_head.bbox_head.{fc_cls,fc_reg}.*       -> not mapped: that head classifies the
                                                  average-pooled res5 of each RoI; dcn_det's
                                                  R-FCN / Fast R-CNN heads have no such layer

The anchors of mmdetection's ``AnchorGenerator`` have the same order (ratio-major, scale-minor)
but are centred on the cell's corner (``center_offset=0``) and not rounded, so the RPN's deltas
start about half a stride off until fine-tuning adjusts them (a note says so). An RPN trained
with a softmax objectness (``use_sigmoid=False``: two interleaved channels per anchor, the
foreground first) is refused, naming the tensor.

mmdetection 1.x files (``meta["mmdet_version"]`` 0.x / 1.x, or a ``bbox_head.*`` outside
``roi_head``) put the background class first, encode boxes with a +1 and centre anchors
differently: they are refused, pointing to mmdetection's ``upgrade_model_version.py``.

Input: the checkpoint's ``meta`` holds the training config as text (``meta["config"]`` in
mmdetection 2, ``meta["cfg"]`` in 3); ``style='caffe'`` means the MSRA Bottleneck
(``stride_in_1x1``), ``bgr_to_rgb=False`` / ``to_rgb=False`` a BGR-trained stem, which is
flipped to RGB, with the mean given there (caffe style: ``[103.53, 116.28, 123.675]`` BGR, std
1). Without that text nothing is assumed and a note says so.
"""
import re
from typing import Any, Dict, Optional

import torch

from dcn_det.weights.mmdet_fpn import is_fpn, map_fpn_heads
from dcn_det.weights.source import SourceWeights, WeightsError, flip_stem_to_rgb

_MAP = {"rpn_head.rpn_conv.": "rpn.head.conv.", "rpn_head.rpn_cls.": "rpn.head.cls_logits.",
        "rpn_head.rpn_reg.": "rpn.head.bbox_pred.", "roi_head.shared_head.": "backbone.",
        "backbone.": "backbone."}
_NO_COUNTERPART = ("roi_head.bbox_head.",)
_CAFFE = re.compile(r"style\s*=\s*['\"]caffe['\"]")
_BGR = re.compile(r"\b(bgr_)?to_rgb\s*=\s*False")
_RGB = re.compile(r"\b(bgr_)?to_rgb\s*=\s*True")
_MEAN = re.compile(r"\bmean\s*=\s*\[\s*([-\d.eE+]+)\s*,\s*([-\d.eE+]+)\s*,\s*([-\d.eE+]+)\s*\]")
_STD = re.compile(r"\bstd\s*=\s*\[\s*([-\d.eE+]+)\s*,\s*([-\d.eE+]+)\s*,\s*([-\d.eE+]+)\s*\]")


def _config_text(meta: Any) -> Optional[str]:
    if not isinstance(meta, dict):
        return None
    for key in ("config", "cfg"):
        if isinstance(meta.get(key), str):
            return meta[key]
    return None


def _num_classes(meta: Any, state: Dict[str, torch.Tensor]) -> Optional[int]:
    if isinstance(meta, dict):
        names = meta.get("CLASSES")
        if names is None and isinstance(meta.get("dataset_meta"), dict):
            names = meta["dataset_meta"].get("classes")
        if isinstance(names, (list, tuple)) and names:
            return len(names)
    fc_cls = state.get("roi_head.bbox_head.fc_cls.weight")
    return fc_cls.shape[0] - 1 if fc_cls is not None else None


def _input_facts(source: SourceWeights, text: Optional[str]) -> None:
    if text is None:
        source.notes.append("the checkpoint's meta has no training config, so its input "
                            "(RGB or BGR, pixel mean) and ResNet style are unknown: a "
                            "style='caffe' model was trained on BGR and needs a flipped stem")
        return
    source.stride_in_1x1 = bool(_CAFFE.search(text))
    bgr = bool(_BGR.search(text)) and not _RGB.search(text)
    mean, std = _MEAN.search(text), _STD.search(text)
    if mean and std:
        m = tuple(float(v) for v in mean.groups())
        s = tuple(float(v) for v in std.groups())
        source.pixel_mean, source.pixel_std = (m[::-1], s[::-1]) if bgr else (m, s)
    if bgr:
        flip_stem_to_rgb(source, "backbone.conv1.weight")


def _refuse_version_1(path: str, state: Dict[str, torch.Tensor], meta: Any) -> None:
    version = meta.get("mmdet_version") if isinstance(meta, dict) else None
    old = isinstance(version, str) and version.split(".")[0] in ("0", "1")
    top_head = next((k for k in state if k.startswith("bbox_head.")), None)
    if old or top_head is not None:
        raise WeightsError(
            f"mmdetection checkpoint {path!r} is from mmdetection 1.x ("
            + (f"meta mmdet_version {version!r}" if old else f"key {top_head!r}")
            + "): its fc_cls has the background first, its boxes a +1 encoding and its anchors "
              "another centre; upgrade it with mmdetection's "
              "tools/model_converters/upgrade_model_version.py first")


def from_detector_state(path: str, state: Dict[str, torch.Tensor], meta: Any) -> SourceWeights:
    """Maps an mmdetection detector state dict (read and unwrapped, see ``torch_file.py``).

    Args:
        meta: the checkpoint's ``"meta"`` entry (or None).

    Raises:
        WeightsError: the RPN has mmdetection's softmax objectness layout; an mmdetection 1.x
            file; an FPN detector part without an exact counterpart (``mmdet_fpn.py``).
    """
    _refuse_version_1(path, state, meta)
    fpn = is_fpn(state)
    source = SourceWeights(path=path, format="mmdet", num_classes=_num_classes(meta, state))
    heads = []
    for key, value in state.items():
        prefix = next((p for p in _MAP if key.startswith(p)), None)
        if prefix is None:
            (heads if fpn else source.not_mapped).append(key)
            continue
        rest = key[len(prefix):]
        if prefix == "backbone." and rest.startswith("fc."):
            source.ignored.append(key)
            continue
        source.add(_MAP[prefix] + rest, value, key)
    if fpn:
        map_fpn_heads(source, state, heads)
    _input_facts(source, _config_text(meta))
    cls, reg = state.get("rpn_head.rpn_cls.weight"), state.get("rpn_head.rpn_reg.weight")
    if cls is not None and reg is not None and cls.shape[0] * 2 == reg.shape[0]:
        raise WeightsError(
            f"mmdetection checkpoint {path!r}: rpn_head.rpn_cls.weight has 2 channels per "
            f"anchor ({cls.shape[0]} for {reg.shape[0] // 4} anchors), the softmax RPN "
            f"(use_sigmoid=False) whose interleaved layout is not mapped; use a sigmoid-RPN "
            f"checkpoint or model.backbone.pretrained for the backbone alone")
    if fpn:
        return source
    if any(k.startswith(_NO_COUNTERPART) for k in state):
        source.notes.append("roi_head.bbox_head (fc_cls, fc_reg on the average-pooled res5 of "
                            "each RoI) has no counterpart in dcn_det's box heads, which keep "
                            "their initialisation")
    if "rpn_head.rpn_conv.weight" in state:
        source.notes.append("mmdetection's RPN anchors are centred on the cell corner, dcn_det's "
                            "on the cell centre: the RPN deltas start half a stride off")
    return source


def is_mmdet_detector(state: Dict[str, torch.Tensor]) -> bool:
    """True for an mmdetection detector: ``backbone.*`` with ``rpn_head.*`` or ``roi_head.*``."""
    return any(k.startswith(("rpn_head.", "roi_head.")) for k in state)

