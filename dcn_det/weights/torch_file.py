"""Reading a torch-saved file of weights safely, and telling torchvision from mmdetection."""
import os
from typing import Any, Dict, Tuple

import torch

from dcn_det.weights.source import UnreadableWeightsError, WeightsError

# Wrappers a training checkpoint puts around its state dict (mmcv/mmdetection: "state_dict";
# detectron2 and dcn_det: "model").
_WRAPPERS = ("state_dict", "model")
# What tools/convert_weights.py records beside the state dict: the facts of the original file.
INFO_KEY = "dcn_det_weights"


def load_torch_file(path: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with our errors.

    Raises:
        FileNotFoundError: no such file.
        UnreadableWeightsError: truncated, corrupt, or not a weights-only torch file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights file {path!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip, pickle and EOF errors all mean "unreadable"
        raise UnreadableWeightsError(
            f"could not read pretrained weights {path!r}: the file is truncated, corrupt or "
            f"not a weights-only torch file ({type(e).__name__}: {e})") from e


def unwrap_state_dict(obj: Any, path: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """The ``name -> tensor`` dict inside a loaded torch file (see ``read_state_dict``)."""
    info = {}
    if isinstance(obj, dict):
        if isinstance(obj.get(INFO_KEY), dict):
            info = obj[INFO_KEY]
        for wrapper in _WRAPPERS:
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict):
        raise WeightsError(
            f"pretrained weights {path!r} must hold a state dict (name -> tensor), "
            f"got {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"pretrained weights {path!r}: entry {key!r} is a "
                               f"{type(value).__name__}, not a tensor")
        # Checkpoints saved from DistributedDataParallel prefix every key with "module.".
        state[key[len("module."):] if key.startswith("module.") else key] = value
    return state, info


def read_state_dict(path: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """The ``name -> tensor`` dict a torch file holds, unwrapped and without ``module.``.

    Args:
        path: a file written by ``torch.save``: a state dict, or a checkpoint dict holding
            one under ``"state_dict"`` or ``"model"``. Read with
            ``torch.load(map_location="cpu", weights_only=True)`` only.

    Returns:
        ``(state, info)``: ``info`` is the ``"dcn_det_weights"`` entry a converted file
        carries beside its ``"state_dict"`` (``format``, ``stride_in_1x1``, ``pixel_mean``,
        ``pixel_std``, ``flipped_bgr`` of the original), else ``{}``.

    Raises:
        FileNotFoundError: no such file.
        UnreadableWeightsError: truncated, corrupt, or not a weights-only torch file.
        WeightsError: the file holds no state dict, or an entry is not a tensor.
    """
    return unwrap_state_dict(load_torch_file(path), path)


def is_mmdet_state(state: Dict[str, torch.Tensor]) -> bool:
    """True when the keys are a detector's (``backbone.*``), as mmdetection writes them."""
    return any(k.startswith("backbone.") for k in state)
