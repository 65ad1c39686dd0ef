"""The official MXNet Deformable ConvNets ``.params`` files mapped onto our names.

Files: the ImageNet ``resnet_v1_101-0000.params`` the official configs start from, and the
trained R-FCN / Faster R-CNN models (``rfcn_dcn_coco-0000.params``, ...). Names, after the
``arg:`` / ``aux:`` prefix (``names.py`` for the block names)::

    conv1_weight                                    -> conv1.weight
    bn_conv1_{gamma,beta,moving_mean,moving_var}    -> bn1.{weight,bias,running_mean,running_var}
    res{blk}_branch{1,2a,2b,2c}_weight              -> layer.{downsample.0,conv1,conv2,conv3}.weight
    bn{blk}_branch{1,2a,2b,2c}_{gamma,...}          -> layer.{downsample.1,bn1,bn2,bn3}.*
    res{blk}_branch2b_offset_{weight,bias}          -> layer.conv2.conv_offset.{weight,bias}

with ``blk`` = ``2a``..``5c``, ``4b22`` (see ``names.parse_msra_block``). The deformable 3x3
(``DeformableConvolution``, ``num_deformable_group=4``) keeps its weight as
``res5a_branch2b_weight``; its offset conv (72 = 2*4*9 channels, with bias) has the channel
layout of ``dcn_det.ops.deform_conv2d`` (DESIGN 4.1), so it is copied as is.

These models take RGB input (the official ``transform`` reverses OpenCV's BGR) minus
``PIXEL_MEANS`` [103.06, 115.90, 123.15] (BGR order), without std scaling: set
``model.pixel_mean: [123.15, 115.90, 103.06]`` and ``model.pixel_std: [1, 1, 1]``. No channel
flip is needed. The ResNets are MSRA's: ``stride_in_1x1: true``. BatchNorm eps is 1e-5, as
dcn_det's. The detector heads (``rpn_conv_3x3``, ``rpn_cls_score``, ``rpn_bbox_pred``,
``conv_new_1``, ``rfcn_cls``, ``rfcn_bbox``, ``rfcn_*_offset_t``, ``fc_new_*``, ``cls_score``,
``bbox_pred``, ``offset``) are reported as not mapped here: backbones only (a whole detector is
read by ``mxnet_detector.py`` for ``model.weights``).
"""
import re

import torch

from dcn_det.weights.mxnet_params import read_params
from dcn_det.weights.names import BRANCH_TO_MODULE, BRANCH_TO_NORM, block_prefix, parse_msra_block
from dcn_det.weights.source import SourceWeights

OFFICIAL_MEAN_RGB = (123.15, 115.90, 103.06)
OFFICIAL_STD = (1.0, 1.0, 1.0)

_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
       "moving_var": "running_var"}
_STEM = {"conv1_weight": "conv1.weight",
         **{f"bn_conv1_{k}": f"bn1.{v}" for k, v in _BN.items()}}
_CONV = re.compile(r"^res([2-5][a-z]\d*)_branch(1|2a|2b|2c)_weight$")
_OFFSET = re.compile(r"^res([2-5][a-z]\d*)_branch2b_offset_(weight|bias)$")
_NORM = re.compile(r"^bn([2-5][a-z]\d*)_branch(1|2a|2b|2c)_(gamma|beta|moving_mean|moving_var)$")
_IGNORED = re.compile(r"^fc1000_")


def our_backbone_name(name: str):
    """Our backbone name of an official name (``arg:``/``aux:`` stripped), else None."""
    if name in _STEM:
        return _STEM[name]
    for pattern in (_CONV, _OFFSET, _NORM):
        m = pattern.match(name)
        if not m:
            continue
        block = parse_msra_block(m.group(1))
        if block is None:
            return None
        p = block_prefix(*block)
        if pattern is _CONV:
            return f"{p}.{BRANCH_TO_MODULE[m.group(2)]}.weight"
        if pattern is _OFFSET:
            return f"{p}.conv2.conv_offset.{m.group(2)}"
        return f"{p}.{BRANCH_TO_NORM[m.group(2)]}.{_BN[m.group(3)]}"
    return None


def read_mxnet(path: str) -> SourceWeights:
    """Reads and maps an official MXNet Deformable ConvNets ``.params`` file."""
    source = SourceWeights(path=path, format="mxnet", stride_in_1x1=True,
                           pixel_mean=OFFICIAL_MEAN_RGB, pixel_std=OFFICIAL_STD)
    for key, array in read_params(path).items():
        name = key.split(":", 1)[1] if key.startswith(("arg:", "aux:")) else key
        ours = our_backbone_name(name)
        if ours is not None:
            source.add(ours, torch.from_numpy(array), key)
        elif _IGNORED.match(name):
            source.ignored.append(key)
        else:
            source.not_mapped.append(key)
    return source
