"""The official MXNet Deformable ConvNets detectors (``rfcn_dcn_coco-0000.params``, the
deformable Faster R-CNN models) mapped onto a whole dcn_det detector (DESIGN 5.1).

The backbone is read as by ``mxnet.py`` (names under ``backbone.``). The heads, after the
``arg:`` prefix, from the symbols ``resnet_v1_101_rfcn_dcn`` and ``resnet_v1_101_rcnn_dcn``::

    rpn_conv_3x3_{weight,bias}        -> rpn.head.conv.*
    rpn_cls_score_{weight,bias}       -> rpn.head.cls_logits.*  (2A: A background maps, then A
                                         foreground, as dcn_det's softmax objectness)
    rpn_bbox_pred_{weight,bias}       -> rpn.head.bbox_pred.*   (anchor-major, (dx, dy, dw, dh))
    conv_new_1_{weight,bias}          -> roi_heads.box_head.conv_new.*
  R-FCN:
    rfcn_cls_*                        -> rfcn_cls      (G*G maps per class; background moved last)
    rfcn_bbox_*                       -> rfcn_bbox     (4*G*G maps per box slot; idem)
    rfcn_cls_offset_t_*               -> cls_offset    (2*G*G maps per class; idem)
    rfcn_bbox_offset_t_*              -> bbox_offset   (as is)
  Faster R-CNN:
    offset_*                          -> offset_fc     (the deformable RoI pooling's offset fc)
    fc_new_1_*, fc_new_2_*            -> fc1, fc2
    cls_score_*                       -> cls_score     (background row moved last)
    bbox_pred_*                       -> bbox_pred     (the background slot left out)

Position-sensitive channels are ``(c*G + gh)*G + gw`` in both codes (the same operator), so only
the class blocks move (``class_layout.py``). ``G`` comes from ``rfcn_bbox_offset_t`` (``2*G*G``
rows) or, in a model without offsets, from the ``group_size`` given (the model's; official 7).
The ``*_test`` copies of the box regressors that the official training writes beside them
(multiplied by the target stds) are ignored; a file with only those is divided back.
The input is RGB with the official pixel mean (``mxnet.py``).
"""
from typing import Dict, Optional

import numpy as np
import torch

from dcn_det.weights.class_layout import background_last, drop_background, undo_bbox_stds
from dcn_det.weights.mxnet import OFFICIAL_MEAN_RGB, OFFICIAL_STD, our_backbone_name
from dcn_det.weights.mxnet_params import read_params
from dcn_det.weights.source import SourceWeights, WeightsError

_HEAD = "roi_heads.box_head."
# Official layer -> (our module, class layout): None as is, "last" background moved last,
# "drop" background box slot left out.
_RPN = {"rpn_conv_3x3": "rpn.head.conv", "rpn_cls_score": "rpn.head.cls_logits",
        "rpn_bbox_pred": "rpn.head.bbox_pred"}
_RFCN = {"conv_new_1": ("conv_new", None), "rfcn_cls": ("rfcn_cls", "last"),
         "rfcn_bbox": ("rfcn_bbox", "last"), "rfcn_cls_offset_t": ("cls_offset", "last"),
         "rfcn_bbox_offset_t": ("bbox_offset", None)}
_FASTER = {"conv_new_1": ("conv_new", None), "offset": ("offset_fc", None),
           "fc_new_1": ("fc1", None), "fc_new_2": ("fc2", None),
           "cls_score": ("cls_score", "last"), "bbox_pred": ("bbox_pred", "drop")}
_BOX = {"rfcn_bbox", "bbox_pred"}


def _strip(key: str) -> str:
    return key.split(":", 1)[1] if key.startswith(("arg:", "aux:")) else key


def _layer(name: str):
    """``("rfcn_cls", "weight", False)`` from ``rfcn_cls_weight``; ``test`` True for
    ``..._weight_test``; None for other names."""
    test = name.endswith("_test")
    base = name[:-len("_test")] if test else name
    for field in ("weight", "bias"):
        if base.endswith("_" + field):
            return base[:-len(field) - 1], field, test
    return None


def _block_rows(layer: str, gg: int) -> int:
    """Rows of one class block (or box slot) of ``layer`` with ``G*G = gg``."""
    return {"rfcn_cls": gg, "rfcn_bbox": 4 * gg, "rfcn_cls_offset_t": 2 * gg,
            "cls_score": 1, "bbox_pred": 4}[layer]


def read_mxnet_detector(path: str, group_size: Optional[int] = None) -> SourceWeights:
    """Reads an official R-FCN or Faster R-CNN ``.params`` file as a whole detector.

    Args:
        path: the ``.params`` file.
        group_size: G of the R-FCN position-sensitive maps when the file has no
            ``rfcn_bbox_offset_t`` to tell (default 7, the official value).

    Returns:
        SourceWeights under dcn_det's detector names, background-last class layouts, and
        ``num_classes`` (K, background excluded) from the class score layer.

    Raises:
        WeightsError: a class-indexed layer whose rows are not whole class blocks (named), or
            an R-FCN and a Faster R-CNN head in one file.
    """
    source = SourceWeights(path=path, format="mxnet", stride_in_1x1=True,
                           pixel_mean=OFFICIAL_MEAN_RGB, pixel_std=OFFICIAL_STD)
    arrays = {_strip(k): (k, v) for k, v in read_params(path).items()}
    rfcn = any(n.startswith("rfcn_cls_") for n in arrays)
    faster = "cls_score_weight" in arrays or "fc_new_1_weight" in arrays
    if rfcn and faster:
        raise WeightsError(f"MXNet params file {path!r} holds both an R-FCN (rfcn_cls) and a "
                           f"Faster R-CNN (cls_score) head; it is not one detector")
    head = _RFCN if rfcn else _FASTER
    offset_t = arrays.get("rfcn_bbox_offset_t_weight")
    gg = offset_t[1].shape[0] // 2 if offset_t is not None else (group_size or 7) ** 2
    layers: Dict[str, Dict[str, tuple]] = {}  # our tensor name -> {"plain"/"test": (key, arr)}
    for name, (key, array) in arrays.items():
        backbone = our_backbone_name(name)
        if backbone is not None:
            source.add("backbone." + backbone, torch.from_numpy(np.array(array)), key)
            continue
        parsed = _layer(name)
        if parsed is None or (parsed[0] not in _RPN and parsed[0] not in head) \
                or (parsed[2] and parsed[0] not in _BOX):
            (source.ignored if name.startswith("fc1000_") else source.not_mapped).append(key)
            continue
        layer, field, test = parsed
        layers.setdefault(f"{layer}.{field}", {})["test" if test else "plain"] = (key, array)
    for tensor_name, versions in layers.items():
        layer, field = tensor_name.rsplit(".", 1)
        key, array = versions.get("plain") or versions["test"]
        value = torch.from_numpy(np.array(array))
        if "plain" in versions and "test" in versions:
            source.ignored.append(versions["test"][0])
        elif "plain" not in versions:  # only the official test copy: undo its stds
            value = undo_bbox_stds(value, gg if layer == "rfcn_bbox" else 1, key, path)
            source.notes.append(f"{key}: the official test copy, divided by the box target "
                                f"stds {list((0.1, 0.1, 0.2, 0.2))}")
        if layer in _RPN:
            source.add(f"{_RPN[layer]}.{field}", value, key)
            continue
        ours, layout = head[layer]
        if layout == "last":
            value = background_last(value, _block_rows(layer, gg), key, path)
        elif layout == "drop":
            value = drop_background(value, _block_rows(layer, gg), key, path)
        source.add(f"{_HEAD}{ours}.{field}", value, key)
    score = arrays.get("rfcn_cls_weight" if rfcn else "cls_score_weight")
    if score is not None:
        per_class = gg if rfcn else 1
        source.num_classes = score[1].shape[0] // per_class - 1
    if not rfcn and ("bbox_pred_weight" in arrays or "bbox_pred_weight_test" in arrays):
        source.notes.append("bbox_pred: the official background box slot is left out "
                            "(dcn_det regresses foreground boxes only)")
    return source
