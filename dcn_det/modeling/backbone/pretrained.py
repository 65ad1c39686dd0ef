"""Loading torchvision-format ImageNet ResNet weights into ``ResNet``.

The backbone's module names equal torchvision's, and FrozenBatchNorm2d's buffers have
BatchNorm's names, so the mapping is by name: ``conv1.weight``, ``bn1.running_mean``,
``layer3.4.conv2.weight`` (also the main weight of a deformable conv2) ... ``fc.*`` is the
classifier and is ignored. A deformable conv's ``conv_offset`` has no counterpart and stays
zero, so the network starts as the pretrained plain one.
"""
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List

import torch
from torch import nn

logger = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What ``load_pretrained`` did.

    Attributes:
        path: the file loaded.
        loaded: model keys that received a value.
        missing: model keys the file lacks, other than the expected ones (they keep their
            initialisation; normally empty).
        expected_missing: offset-conv keys (``...conv_offset.*``), absent from any ImageNet
            checkpoint by design; they stay zero.
        unexpected: file keys with no place in the model (e.g. ``layer4.*`` when res5 is not
            built, BN statistics when the model uses GroupNorm).
        ignored: file keys deliberately skipped: the classifier ``fc.*`` and BatchNorm
            step counters (``num_batches_tracked``) the model has no buffer for.
    """

    path: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    expected_missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)


def _read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights file {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip, pickle and EOF errors all mean "unreadable"
        raise RuntimeError(
            f"could not read pretrained weights {path!r}: the file is truncated, corrupt or "
            f"not a weights-only torch file ({type(e).__name__}: {e})") from e
    # Accept a training checkpoint that wraps the state dict.
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        raise ValueError(
            f"pretrained weights {path!r} must hold a state dict (name -> tensor), "
            f"got {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"pretrained weights {path!r}: entry {key!r} is a "
                             f"{type(value).__name__}, not a tensor")
        # Checkpoints saved from DistributedDataParallel prefix every key with "module.".
        state[key[len("module."):] if key.startswith("module.") else key] = value
    return state


def load_pretrained(model: nn.Module, path: str) -> LoadReport:
    """Loads a torchvision-format ResNet state dict into ``model`` (a ``ResNet``) in place.

    Args:
        model: the backbone; its ``state_dict()`` names are the targets.
        path: a file written by ``torch.save(state_dict)``; read with
            ``torch.load(map_location="cpu", weights_only=True)``.

    Returns:
        A LoadReport; missing and unexpected keys are also logged.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RuntimeError: the file cannot be read (truncated, corrupt, not a torch file).
        ValueError: the file is not a state dict, or a tensor's shape differs from the
            model's (every mismatching key is named with both shapes).
    """
    state = _read_state_dict(path)
    target = model.state_dict()
    report = LoadReport(path=path)
    to_load, mismatches = {}, []
    for key, value in state.items():
        if key.startswith("fc."):
            report.ignored.append(key)
        elif key in target:
            if tuple(target[key].shape) != tuple(value.shape):
                mismatches.append(f"{key}: file has {tuple(value.shape)}, "
                                  f"model needs {tuple(target[key].shape)}")
            else:
                to_load[key] = value
        elif key.endswith("num_batches_tracked"):
            report.ignored.append(key)
        else:
            report.unexpected.append(key)
    if mismatches:
        raise ValueError(f"pretrained weights {path!r} do not fit the model "
                         f"(check depth and width_mult): " + "; ".join(mismatches))
    model.load_state_dict(to_load, strict=False)
    report.loaded = sorted(to_load)
    for key in target:
        if key not in to_load:
            (report.expected_missing if ".conv_offset." in key else report.missing).append(key)

    logger.info("loaded %d tensors from %s (%d offset-conv tensors stay zero-initialised)",
                len(report.loaded), path, len(report.expected_missing))
    if report.missing:
        logger.warning("pretrained weights %s lack %d model tensors (kept at init): %s",
                       path, len(report.missing), ", ".join(report.missing))
    if report.unexpected:
        logger.warning("pretrained weights %s have %d tensors the model does not use: %s",
                       path, len(report.unexpected), ", ".join(report.unexpected))
    if getattr(model, "stride_in_1x1", False) and getattr(model, "depth", 0) >= 50:
        logger.warning(
            "model has stride_in_1x1=True (MSRA layout, stride on the 1x1 conv) but "
            "torchvision-format weights were trained with the stride on the 3x3 conv; "
            "set stride_in_1x1: false to match them")
    return report
