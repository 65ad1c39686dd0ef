"""dcn_det's own detector files as ``model.weights``: training checkpoints, inference files
(``dcn_det/io``) and ``tools/convert_weights.py --detector`` output.

All hold the detector's ``state_dict()`` under ``"model"`` (names as ours, nothing to map).
Checkpoints and inference files also hold the resolved config (``"config"``: the file's
``model.num_classes`` and pixel statistics) and ``"class_names"``; a converted file records its
original's facts under ``"dcn_det_weights"`` (``num_classes``, ``pixel_mean``, ...).
"""
from typing import Any, Callable, Dict, Optional

import torch

from dcn_det.weights.source import SourceWeights, WeightsError
from dcn_det.weights.torch_file import INFO_KEY, load_torch_file, unwrap_state_dict

# Our detector's top-level modules (DESIGN 3): a state dict with one of these is a dcn_det one.
DETECTOR_PREFIXES = ("rpn.head.", "roi_heads.box_head.")


def is_dcn_det_state(state: Dict[str, torch.Tensor]) -> bool:
    """True when the keys are those of a dcn_det detector (``rpn.head.*``, ``roi_heads.*``)."""
    return any(k.startswith(DETECTOR_PREFIXES) for k in state)


def _tuple(value) -> Optional[tuple]:
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) \
        and len(value) == 3 else None


def from_loaded(path: str, obj: Any) -> SourceWeights:
    """Wraps a loaded dcn_det file (see the module docstring).

    Raises:
        WeightsError: no state dict, or its keys are not a dcn_det detector's.
    """
    state, info = unwrap_state_dict(obj, path)
    if not is_dcn_det_state(state):
        raise WeightsError(f"weights file {path!r} is not a dcn_det detector: none of its keys "
                           f"start with {' or '.join(DETECTOR_PREFIXES)} (keys start: "
                           f"{', '.join(list(state)[:5])})")
    source = SourceWeights(path=path, format="dcn_det")
    model_cfg = obj.get("config", {}).get("model") if isinstance(obj, dict) \
        and isinstance(obj.get("config"), dict) else None
    facts = model_cfg if isinstance(model_cfg, dict) else info
    k = facts.get("num_classes")
    source.num_classes = k if isinstance(k, int) and not isinstance(k, bool) else None
    source.pixel_mean, source.pixel_std = _tuple(facts.get("pixel_mean")), \
        _tuple(facts.get("pixel_std"))
    flipped = info.get("flipped_bgr")
    source.flipped_bgr = flipped if isinstance(flipped, bool) else False
    for key, value in state.items():
        source.add(key, value, key)
    return source


def read_dcn_det(path: str,
                 read_checkpoint: Optional[Callable[[str], Dict[str, Any]]] = None
                 ) -> SourceWeights:
    """Reads a dcn_det detector file.

    Args:
        read_checkpoint: reads and verifies a dcn_det file (``dcn_det.io.load_file``, which
            checks its SHA-256 trailer; callers above ``io`` pass it). Default: a plain
            ``torch.load(weights_only=True)``, which cannot tell a damaged file.
    """
    obj = read_checkpoint(path) if read_checkpoint is not None else load_torch_file(path)
    if isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != "_path"}
    return from_loaded(path, obj)


__all__ = ["DETECTOR_PREFIXES", "INFO_KEY", "is_dcn_det_state", "from_loaded", "read_dcn_det"]
