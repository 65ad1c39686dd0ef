"""One entry point for every format: detect it, read it, fill a model, check the fill.

Format detection (``format="auto"``): a file that starts with MXNet's list magic is
``mxnet`` (so is any ``.params``), a ``.pkl`` is ``detectron2``, anything else is a torch file:
``mmdet`` when its (unwrapped) keys start with ``backbone.``, else ``torchvision``.
"""
import os
import struct
from typing import Dict, Optional

import torch
from torch import nn

from dcn_det.weights import mmdet, torchvision
from dcn_det.weights.detectron2 import read_detectron2
from dcn_det.weights.mxnet import read_mxnet
from dcn_det.weights.mxnet_params import LIST_MAGIC
from dcn_det.weights.names import depth_from_keys, resnet_keys
from dcn_det.weights.report import (DEFAULT_MIN_FILL, LoadReport, check_fill, is_fillable,
                                    log_report, logger)
from dcn_det.weights.source import FORMATS, SourceWeights, WeightsError
from dcn_det.weights.torch_file import is_mmdet_state, read_state_dict


def sniff_kind(path: str) -> str:
    """``"mxnet"``, ``"detectron2"`` or ``"torch"`` from the first bytes and the extension."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights file {path!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    if path.endswith(".params") or (len(head) == 8 and struct.unpack("<Q", head)[0] == LIST_MAGIC):
        return "mxnet"
    return "detectron2" if path.endswith(".pkl") else "torch"


def detect_format(path: str) -> str:
    """The format of ``path`` (see the module docstring); a torch file is read to tell."""
    kind = sniff_kind(path)
    if kind != "torch":
        return kind
    return "mmdet" if is_mmdet_state(read_state_dict(path)[0]) else "torchvision"


def read_weights(path: str, format: str = "auto") -> SourceWeights:
    """Reads a weights file of any supported format, mapped onto our backbone's names.

    Args:
        path: the file.
        format: ``"auto"`` or one of ``FORMATS``.

    Raises:
        FileNotFoundError, WeightsError (and its UnreadableWeightsError): see the readers.
    """
    if format not in ("auto",) + FORMATS:
        raise WeightsError(f"weights format must be 'auto' or one of {list(FORMATS)}, got "
                           f"{format!r} (for {path!r})")
    fmt = sniff_kind(path) if format == "auto" else format
    if fmt == "mxnet":
        return read_mxnet(path)
    if fmt == "detectron2":
        return read_detectron2(path)
    state, info = read_state_dict(path)
    if fmt == "torch":
        fmt = "mmdet" if is_mmdet_state(state) else "torchvision"
    return (mmdet if fmt == "mmdet" else torchvision).from_state_dict(path, state, info)


def _match(model_state: Dict[str, torch.Tensor], source: SourceWeights, report: LoadReport):
    """(tensors to load, shape-mismatch messages of non-offset tensors)."""
    to_load, mismatches = {}, []
    for key, value in source.tensors.items():
        target = model_state.get(key)
        if target is None:
            (report.ignored if key.endswith("num_batches_tracked")
             else report.unexpected).append(key)
        elif tuple(target.shape) != tuple(value.shape):
            message = (f"{key}: file has {tuple(value.shape)}, model needs "
                       f"{tuple(target.shape)}")
            (report.offset_mismatch if ".conv_offset." in key else mismatches).append(message)
        else:
            to_load[key] = value.to(target.dtype) if value.is_floating_point() else value
    return to_load, mismatches


def load_source(model: nn.Module, source: SourceWeights,
                min_fill: float = DEFAULT_MIN_FILL) -> LoadReport:
    """Copies ``source`` into ``model`` after checking shapes and the fill fraction.

    Nothing is copied when a check fails, so the model is never half loaded.

    Args:
        model: the backbone (a ``ResNet``); its ``state_dict()`` names are the targets.
        source: what ``read_weights`` returned.
        min_fill: the least fraction of the model's fillable tensors (all but offset convs
            and step counters) the file must fill.

    Raises:
        WeightsError: a non-offset tensor's shape differs from the model's (every one is named
            with both shapes: check depth and width_mult).
        FillError: under ``min_fill`` was filled.
    """
    state = model.state_dict()
    report = LoadReport(path=source.path, format=source.format, ignored=list(source.ignored),
                        not_mapped=list(source.not_mapped), flipped_bgr=source.flipped_bgr,
                        pixel_mean=source.pixel_mean, pixel_std=source.pixel_std)
    to_load, mismatches = _match(state, source, report)
    if mismatches:
        raise WeightsError(f"pretrained weights {source.path!r} do not fit the model "
                           f"(check depth and width_mult): " + "; ".join(mismatches))
    fillable = [k for k in state if is_fillable(k)]
    report.fillable = len(fillable)
    report.filled = sum(1 for k in fillable if k in to_load)
    check_fill(source.path, source.format, report.filled, report.fillable, min_fill,
               (k for k in fillable if k not in to_load),
               list(source.tensors) + source.not_mapped + source.ignored,
               "the model's backbone tensors")
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    for key in state:
        if key not in to_load and not key.endswith("num_batches_tracked"):
            (report.expected_missing if ".conv_offset." in key else report.missing).append(key)
    log_report(report, getattr(model, "stride_in_1x1", None)
               if getattr(model, "depth", 0) >= 50 else None, source.stride_in_1x1)
    return report


def load_pretrained(model: nn.Module, path: str, *, format: str = "auto",
                    min_fill: float = DEFAULT_MIN_FILL) -> LoadReport:
    """Reads ``path`` (any supported format) into ``model`` in place.

    Args:
        model: the backbone.
        path: torchvision / mmdetection torch file, detectron2 ``.pkl``, MXNet ``.params``.
        format: ``"auto"`` (see ``detect_format``) or one of ``FORMATS``.
        min_fill: see ``load_source``.

    Returns:
        A LoadReport; missing, unexpected and mismatching keys are also logged.
    """
    return load_source(model, read_weights(path, format), min_fill)


def convert(path: str, format: str = "auto", depth: Optional[int] = None,
            min_fill: float = DEFAULT_MIN_FILL) -> SourceWeights:
    """Reads ``path`` and checks it against a full ResNet of ``depth``, without a model.

    For ``tools/convert_weights.py``: the result's ``tensors`` are a torchvision-format state
    dict (RGB stem) that ``model.backbone.pretrained`` loads directly.

    Args:
        depth: 50 or 101; None infers it from the number of res4 blocks in the file.

    Raises:
        WeightsError: the depth cannot be inferred.
        FillError: under ``min_fill`` of the ResNet's tensors (offsets aside) came from it.
    """
    source = read_weights(path, format)
    if depth is None:
        depth = depth_from_keys(source.tensors)
        if depth is None:
            raise WeightsError(
                f"cannot tell the depth of {path!r} read as {source.format!r}: no res4 "
                f"blocks among its {len(source.tensors)} mapped tensors; pass --depth "
                f"(file keys start: {', '.join(list(source.tensors)[:5] + source.not_mapped[:5])})")
    expected = resnet_keys(depth)
    present = [k for k in expected if k in source.tensors]
    check_fill(path, source.format, len(present), len(expected), min_fill,
               (k for k in expected if k not in source.tensors),
               list(source.tensors) + source.not_mapped, f"a ResNet-{depth}'s tensors")
    logger.info("converted %s (%s): %d of %d ResNet-%d tensors, %d offset-conv tensors, "
                "%d not mapped, %d ignored", path, source.format, len(present), len(expected),
                depth, sum(".conv_offset." in k for k in source.tensors),
                len(source.not_mapped), len(source.ignored))
    return source
