"""mmdetection / mmcv checkpoints: ``{"state_dict": {...}, "meta": {...}}``.

The backbone's keys are torchvision's with a ``backbone.`` prefix (``backbone.layer1.0.conv1
.weight``); mmcv's deformable convs (``DeformConv2dPack``, ``ModulatedDeformConv2dPack``) keep
the main weight as ``conv2.weight`` and the offset conv as ``conv2.conv_offset.*`` with the
same channel layout as ours (per tap ``(dy, dx)``; modulated: ``2*G*9`` offset channels, then
``G*9`` mask logits), so they map by name; their shapes fit when the offset groups agree.
Everything outside ``backbone.`` (``neck.*``, ``rpn_head.*``, ``roi_head.*``, ``bbox_head.*``)
is reported as not mapped: only backbones are loaded.

mmdetection's ``style="pytorch"`` ResNets (the default) put the stride on the 3x3 conv and take
RGB input; ``style="caffe"`` ones put it on the 1x1 and were trained on BGR: the file does not
say which, so nothing is assumed (``stride_in_1x1`` is None, no channel flip).
"""
from typing import Dict

import torch

from dcn_det.weights.source import SourceWeights

_PREFIX = "backbone."


def from_state_dict(path: str, state: Dict[str, torch.Tensor], info=None) -> SourceWeights:
    """Maps an mmdetection state dict (already read and unwrapped, see ``torch_file.py``);
    ``info`` is accepted for symmetry with ``torchvision.from_state_dict`` and unused."""
    del info
    source = SourceWeights(path=path, format="mmdet")
    for key, value in state.items():
        if not key.startswith(_PREFIX):
            source.not_mapped.append(key)
        elif key[len(_PREFIX):].startswith("fc."):
            source.ignored.append(key)
        else:
            source.add(key[len(_PREFIX):], value, key)
    return source
