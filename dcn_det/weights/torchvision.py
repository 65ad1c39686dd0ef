"""torchvision ResNet state dicts: the names are ours already (DESIGN 5).

``fc.*`` (the ImageNet classifier) is ignored. torchvision's ResNets put the stride on the 3x3
conv (``stride_in_1x1=False``), take RGB input normalised with the ImageNet mean and std
(dcn_det's default ``model.pixel_mean/std``). A file written by ``tools/convert_weights.py``
has our names too, and records the facts of its original (``torch_file.INFO_KEY``), which
replace these.
"""
from typing import Dict, Optional

import torch

from dcn_det.weights.source import SourceWeights

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def _tuple(value) -> Optional[tuple]:
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else None


def from_state_dict(path: str, state: Dict[str, torch.Tensor],
                    info: Optional[dict] = None) -> SourceWeights:
    """Wraps a torchvision-named state dict (already read, see ``torch_file.py``).

    Args:
        info: the conversion record of a converted file (``torch_file.read_state_dict``).
    """
    source = SourceWeights(path=path, format="torchvision", stride_in_1x1=False,
                           pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD)
    if info:
        stride = info.get("stride_in_1x1")
        source.stride_in_1x1 = stride if isinstance(stride, bool) else None
        source.pixel_mean = _tuple(info.get("pixel_mean"))
        source.pixel_std = _tuple(info.get("pixel_std"))
    for key, value in state.items():
        if key.startswith("fc."):
            source.ignored.append(key)
        else:
            source.add(key, value, key)
    return source
