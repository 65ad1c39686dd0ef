"""Whole-detector weights (``model.weights``): fine-tuning from a trained detector.

``load_detector_weights(model, path)`` reads a dcn_det checkpoint or inference file, an
mmdetection C4 or FPN Faster R-CNN or an official MXNet Deformable ConvNets detector, mapped
onto the detector's ``state_dict()`` names (``backbone.*``, ``neck.*``, ``rpn.head.*``,
``roi_heads.box_head.*``), then checks and copies it (DESIGN 5.1):

* same shape: copied;
* the RPN objectness in the other form (one sigmoid logit per anchor vs dcn_det's softmax pair
  ``(background, foreground)``): converted exactly, because ``softmax(bg, fg)`` is
  ``sigmoid(fg - bg)`` and the 1x1 conv is linear (sigmoid = fg - bg rows; softmax = (0, logit));
* a class-specific layer (``CLASS_LAYERS``) of another shape while the file has another class
  count: left at the model's fresh initialisation, with one warning naming them and both counts;
* an offset conv of another shape (offset groups): left zero and reported, as for backbones;
* any other shape difference: a WeightsError naming every tensor with both shapes;
* an FPN file (``neck.*`` tensors) into a model without a neck, or the reverse: a WeightsError
  saying which is which.

Nothing is copied when a check fails. Format detection (``format="auto"``): MXNet's list magic
or ``.params`` -> ``mxnet``; a torch file whose keys are a dcn_det detector's -> ``dcn_det``,
an mmdetection detector's (``rpn_head.*`` / ``roi_head.*``) -> ``mmdet``; anything else
(a backbone, a ``.pkl``) is refused with what to use instead.
"""
import logging
from typing import Any, Callable, Dict, Optional, Sequence

import torch
from torch import nn

from dcn_det.weights import dcn_det_file
from dcn_det.weights.load import sniff_kind
from dcn_det.weights.mmdet_detector import from_detector_state, is_mmdet_detector
from dcn_det.weights.mxnet_detector import read_mxnet_detector
from dcn_det.weights.report import (DEFAULT_MIN_FILL, LoadReport, sample_keys, check_fill,
                                    check_pixel_stats, warn_stride_layout)
from dcn_det.weights.source import DETECTOR_FORMATS, SourceWeights, WeightsError
from dcn_det.weights.torch_file import load_torch_file, unwrap_state_dict

logger = logging.getLogger("dcn_det.weights")

_HEAD = "roi_heads.box_head."
# Layers whose shape follows the class count K: R-FCN score maps (G*G*(K+1)), class-specific box
# maps (G*G*4*(K+1)) and class offsets (2*G*G*(K+1)); Faster R-CNN scores (K+1) and
# class-specific boxes (4*K). The Faster R-CNN offset fc and class-agnostic box layers are not.
CLASS_LAYERS = tuple(f"{_HEAD}{m}." for m in ("rfcn_cls", "rfcn_bbox", "cls_offset",
                                              "cls_score", "bbox_pred"))
_RPN_CLS = "rpn.head.cls_logits."
_NECK = "neck."
_SETTING = "model.weights_min_fill"

ReadCheckpoint = Callable[[str], Dict[str, Any]]


def detect_detector_format(path: str,
                           read_checkpoint: Optional[ReadCheckpoint] = None) -> str:
    """``"mxnet"``, ``"dcn_det"`` or ``"mmdet"`` (see the module docstring)."""
    return _read_auto(path, read_checkpoint)[0]


def _refuse(path: str, what: str) -> WeightsError:
    return WeightsError(f"model.weights {path!r} is {what}, not a whole detector of a "
                        f"supported format ({', '.join(DETECTOR_FORMATS)}); for backbone "
                        f"weights use model.backbone.pretrained")


def _read_auto(path: str, read_checkpoint: Optional[ReadCheckpoint]):
    """(format, loaded torch object or None)."""
    kind = sniff_kind(path)
    if kind == "mxnet":
        return "mxnet", None
    if kind == "detectron2":
        raise _refuse(path, "a detectron2/Detectron .pkl")
    obj = load_torch_file(path)
    state, _ = unwrap_state_dict(obj, path)
    if dcn_det_file.is_dcn_det_state(state):
        if read_checkpoint is not None:  # read again, verified
            obj = read_checkpoint(path)
        return "dcn_det", obj
    if is_mmdet_detector(state):
        return "mmdet", obj
    raise _refuse(path, f"a torch file whose keys are neither a dcn_det detector's "
                        f"({', '.join(dcn_det_file.DETECTOR_PREFIXES)}) nor an mmdetection "
                        f"detector's (rpn_head., roi_head.) (keys start: "
                        f"{', '.join(list(state)[:4])})")


def read_detector_weights(path: str, format: str = "auto", *, group_size: Optional[int] = None,
                          read_checkpoint: Optional[ReadCheckpoint] = None) -> SourceWeights:
    """Reads a whole detector, mapped onto dcn_det's detector names and layouts.

    Args:
        path: the file.
        format: ``"auto"`` or one of ``DETECTOR_FORMATS``.
        group_size: R-FCN ``G`` for an MXNet file without deformable offsets (default 7).
        read_checkpoint: a verifying reader of dcn_det files (``dcn_det.io.load_file``).

    Raises:
        FileNotFoundError, WeightsError (unreadable, not a detector, no RPN or box-head
        tensor, unmappable layout).
    """
    if format not in ("auto",) + DETECTOR_FORMATS:
        raise WeightsError(f"model.weights_format must be 'auto' or one of "
                           f"{list(DETECTOR_FORMATS)}, got {format!r} (for {path!r})")
    obj = None
    if format == "auto":
        format, obj = _read_auto(path, read_checkpoint)
    if format == "mxnet":
        source = read_mxnet_detector(path, group_size)
    elif format == "dcn_det":
        source = dcn_det_file.from_loaded(path, obj) if obj is not None \
            else dcn_det_file.read_dcn_det(path, read_checkpoint)
    else:
        obj = load_torch_file(path) if obj is None else obj
        state, _ = unwrap_state_dict(obj, path)
        source = from_detector_state(path, state, obj.get("meta") if isinstance(obj, dict)
                                     else None)
    if not any(k.startswith(("rpn.", "roi_heads.")) for k in source.tensors):
        # A backbone alone fills most of a detector's tensors; it must not pass as one.
        raise _refuse(path, f"read as {format!r} without any RPN or box-head tensor (a "
                            f"backbone?)")
    return source


def _num_classes(model: nn.Module) -> Optional[int]:
    return getattr(getattr(model, "roi_heads", None), "num_classes", None)


def _group_size(model: nn.Module) -> Optional[int]:
    pool = getattr(getattr(getattr(model, "roi_heads", None), "box_head", None), "pool_cls", None)
    return getattr(pool, "group_size", None)


def _objectness(value: torch.Tensor, rows: int) -> Optional[torch.Tensor]:
    """The RPN objectness layer in the model's form (``rows`` outputs), or None."""
    if value.shape[0] == 2 * rows:  # softmax (A bg, A fg) -> sigmoid fg - bg
        return value[rows:] - value[:rows]
    if 2 * value.shape[0] == rows:  # sigmoid -> softmax (0, logit)
        return torch.cat((torch.zeros_like(value), value))
    return None


def _match(state: Dict[str, torch.Tensor], source: SourceWeights, model_k: Optional[int],
           report: LoadReport):
    """(tensors to load, shape-mismatch messages)."""
    to_load, mismatches = {}, []
    for key, value in source.tensors.items():
        target = state.get(key)
        if target is None:
            (report.ignored if key.endswith("num_batches_tracked")
             else report.unexpected).append(key)
            continue
        message = f"{key}: file has {tuple(value.shape)}, model needs {tuple(target.shape)}"
        if tuple(target.shape) != tuple(value.shape) and key.startswith(_RPN_CLS):
            converted = _objectness(value, target.shape[0])
            if converted is not None and converted.shape == target.shape:
                form = "softmax" if value.shape[0] > target.shape[0] else "sigmoid"
                report.notes.append(f"{key}: RPN objectness converted from {form} to the "
                                    f"model's form")
                value = converted
        if tuple(target.shape) == tuple(value.shape):
            to_load[key] = value.to(target.dtype) if value.is_floating_point() else value
        elif key.startswith(CLASS_LAYERS) and source.num_classes is not None \
                and model_k is not None and source.num_classes != model_k:
            report.reinitialised.append(key)
        elif ".conv_offset." in key:
            report.offset_mismatch.append(message)
        else:
            if key.startswith(CLASS_LAYERS):
                message += (f" (the file's class count is {source.num_classes}, the model's "
                            f"{model_k}: check class_agnostic_bbox, group_size, pooled_size)")
            mismatches.append(message)
    return to_load, mismatches


def _check_architecture(state: Dict[str, torch.Tensor], source: SourceWeights) -> None:
    """An FPN file into a single-feature model, or the reverse, is refused before the shapes
    are compared: their RPN and box heads differ in kind, not in a tensor."""
    model_fpn = any(k.startswith(_NECK) for k in state)
    file_fpn = any(k.startswith(_NECK) for k in source.tensors)
    where = f"model.weights {source.path!r} ({source.format})"
    if model_fpn and not file_fpn:
        raise WeightsError(f"{where} is a single-feature (C4) detector with no FPN neck "
                           f"tensors (neck.*), the model an FPN detector (model.neck.type: "
                           f"fpn): its RPN and box head do not fit; load its backbone with "
                           f"model.backbone.pretrained instead")
    if file_fpn and not model_fpn:
        raise WeightsError(f"{where} is an FPN detector (neck.* tensors), the model has no "
                           f"neck (model.neck.type: none): use an FPN config "
                           f"(configs/faster_rcnn_fpn/: model.neck.type fpn, model.rpn.type "
                           f"fpn, model.head.type fast_rcnn_fpn)")


def load_detector_source(model: nn.Module, source: SourceWeights,
                         min_fill: float = DEFAULT_MIN_FILL,
                         pixel_mean: Optional[Sequence[float]] = None,
                         pixel_std: Optional[Sequence[float]] = None) -> LoadReport:
    """Copies a read detector file into ``model`` (see the module docstring).

    Args:
        model: the detector (``TwoStageDetector``); its ``state_dict()`` names are the targets.
        source: what ``read_detector_weights`` returned.
        min_fill: the least fraction of the detector's tensors (step counters aside) the
            file must fill (``model.weights_min_fill``).
        pixel_mean, pixel_std: the model's input normalisation, compared with the file's.

    Raises:
        WeightsError: an FPN file into a model without a neck or the reverse; a shape mismatch
            outside the class-specific layers and offset convs.
        FillError: under ``min_fill`` was filled.
    """
    state = model.state_dict()
    _check_architecture(state, source)
    model_k = _num_classes(model)
    report = LoadReport(path=source.path, format=source.format, ignored=list(source.ignored),
                        not_mapped=list(source.not_mapped), flipped_bgr=source.flipped_bgr,
                        pixel_mean=source.pixel_mean, pixel_std=source.pixel_std,
                        file_num_classes=source.num_classes, notes=list(source.notes))
    to_load, mismatches = _match(state, source, model_k, report)
    if mismatches:
        raise WeightsError(f"model.weights {source.path!r} ({source.format}) does not fit the "
                           f"model: " + "; ".join(mismatches))
    fillable = [k for k in state if not k.endswith("num_batches_tracked")]
    report.fillable, report.filled = len(fillable), sum(1 for k in fillable if k in to_load)
    check_fill(source.path, source.format, report.filled, report.fillable, min_fill,
               (k for k in fillable if k not in to_load),
               list(source.tensors) + source.not_mapped + source.ignored,
               "the detector's tensors", _SETTING)
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    for key in fillable:
        if key not in to_load and key not in report.reinitialised:
            (report.expected_missing if ".conv_offset." in key else report.missing).append(key)
    _log(report, model_k)
    backbone = getattr(model, "backbone", None)
    warn_stride_layout(report, getattr(backbone, "stride_in_1x1", None)
                       if getattr(backbone, "depth", 0) >= 50 else None, source.stride_in_1x1)
    check_pixel_stats(report, pixel_mean, pixel_std)
    return report


def _log(report: LoadReport, model_k: Optional[int]) -> None:
    logger.info("model.weights: loaded %d of %d detector tensors from %s (%s); %d missing, "
                "%d unexpected, %d re-initialised for the class count%s", report.filled,
                report.fillable, report.path, report.format, len(report.missing),
                len(report.unexpected), len(report.reinitialised),
                "; stem conv converted BGR->RGB" if report.flipped_bgr else "")
    if report.reinitialised:
        logger.warning("model.weights %s has %s classes, the model %s: the class-specific "
                       "layers %s keep their fresh initialisation", report.path,
                       report.file_num_classes, model_k,
                       ", ".join(sorted({k.rsplit(".", 1)[0] for k in report.reinitialised})))
    if report.missing:
        logger.warning("model.weights %s lacks %d model tensors (kept at init): %s",
                       report.path, len(report.missing), sample_keys(report.missing, 12))
    if report.unexpected:
        logger.warning("model.weights %s has %d tensors the model does not use: %s",
                       report.path, len(report.unexpected), sample_keys(report.unexpected, 12))
    if report.offset_mismatch:
        logger.warning("model.weights %s: %d offset-conv tensors do not fit the model's "
                       "deformable convs and stay zero: %s", report.path,
                       len(report.offset_mismatch), "; ".join(report.offset_mismatch))
    if report.not_mapped:
        logger.info("model.weights %s: %d file tensors have no place in a dcn_det detector: "
                    "%s", report.path, len(report.not_mapped), sample_keys(report.not_mapped))
    for note in report.notes:
        logger.info("model.weights %s: %s", report.path, note)


def load_detector_weights(model: nn.Module, path: str, *, format: str = "auto",
                          min_fill: float = DEFAULT_MIN_FILL,
                          pixel_mean: Optional[Sequence[float]] = None,
                          pixel_std: Optional[Sequence[float]] = None,
                          read_checkpoint: Optional[ReadCheckpoint] = None) -> LoadReport:
    """Reads a whole detector file into ``model`` in place (``model.weights``).

    Args:
        model: the detector, freshly built (its backbone may already hold
            ``model.backbone.pretrained``: every tensor the file fills replaces it).
        path: a dcn_det checkpoint / inference file, an mmdetection C4 or FPN Faster R-CNN
            checkpoint or an official MXNet R-FCN / Faster R-CNN ``.params``.
        format: ``"auto"`` or one of ``DETECTOR_FORMATS`` (``model.weights_format``).
        min_fill, pixel_mean, pixel_std: see ``load_detector_source``.
        read_checkpoint: a verifying reader of dcn_det files (``dcn_det.io.load_file``).

    Returns:
        A LoadReport (filled / missing / unexpected / re-initialised), also logged.
    """
    source = read_detector_weights(path, format, group_size=_group_size(model),
                                   read_checkpoint=read_checkpoint)
    return load_detector_source(model, source, min_fill, pixel_mean, pixel_std)
