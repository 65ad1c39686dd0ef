"""Detectron / detectron2 ``.pkl`` weights (read by ``restricted_pickle.py``).

Layouts accepted: ``{"model": {name: ndarray}, "__author__": ..., ...}`` (detectron2),
``{"blobs": {name: ndarray}}`` (Detectron, Caffe2) and a plain ``{name: ndarray}``.

Two naming schemes:

* Caffe2 (Detectron's ImageNet models ``R-50.pkl``/``R-101.pkl``, MSRA's ResNets): ``conv1_w``,
  ``res_conv1_bn_{s,b}``, ``res{S}_{B}_branch{1,2a,2b,2c}_w`` and ``..._bn_{s,b}`` with
  ``S`` = 2..5 and ``B`` from 0. Their BatchNorm is folded into a per-channel scale ``_bn_s``
  and shift ``_bn_b`` (Caffe2's AffineChannel): it becomes FrozenBatchNorm ``weight = s``,
  ``bias = b``, ``running_mean = 0``, ``running_var = 1`` (with dcn_det's eps 1e-5 the scale
  is s / sqrt(1 + 1e-5), a relative 5e-6 off, as in detectron2). Where a file also has the
  statistics ``_bn_rm`` / ``_bn_riv`` (mean / variance) they are used instead.
* detectron2 (``R-50.pkl`` converted from torchvision, model-zoo ``model_final_*.pkl``):
  ``stem.conv1.weight``, ``stem.conv1.norm.*``, ``res{S}.{B}.conv{1,2,3}.weight``,
  ``res{S}.{B}.conv{i}.norm.*``, ``res{S}.{B}.shortcut.weight``, ``...shortcut.norm.*`` and
  deformable ``res{S}.{B}.conv2_offset.{weight,bias}`` (channel layout as ours), optionally
  under ``backbone.bottom_up.`` (a whole detector: its other keys are not mapped).

Input channels: the MSRA/Caffe2 models and detectron2's own models take BGR images (0-255
minus a BGR mean, std 1), so their stem conv's input channels are reversed to RGB here;
files whose ``__author__`` is ``"torchvision"`` take RGB and are left as they are. The
Bottleneck layout is MSRA's (``stride_in_1x1=True``) except for torchvision-converted files.
"""
import re
from typing import Any, Dict

import numpy as np
import torch

from dcn_det.weights.names import BN_FIELDS, BRANCH_TO_MODULE, BRANCH_TO_NORM, block_prefix
from dcn_det.weights.restricted_pickle import load_restricted
from dcn_det.weights.source import SourceWeights, WeightsError, flip_stem_to_rgb

# detectron2's MSRA configs: PIXEL_MEAN [103.530, 116.280, 123.675] (BGR), PIXEL_STD 1.
MSRA_MEAN_RGB = (123.675, 116.28, 103.53)
MSRA_STD = (1.0, 1.0, 1.0)

_C2_BLOCK = re.compile(r"^res([2-5])_(\d+)_branch(1|2a|2b|2c)_(w|b|bn_s|bn_b|bn_rm|bn_riv)$")
_C2_STEM = {"conv1_w": "conv1.weight", "res_conv1_bn_s": "bn1.weight",
            "res_conv1_bn_b": "bn1.bias", "res_conv1_bn_rm": "bn1.running_mean",
            "res_conv1_bn_riv": "bn1.running_var"}
_C2_BN = {"bn_s": "weight", "bn_b": "bias", "bn_rm": "running_mean", "bn_riv": "running_var"}
_C2_IGNORED = re.compile(r"(_momentum$|^pred_|^fc1000_|^conv1_b$)")

_D2_PREFIXES = ("backbone.bottom_up.", "backbone.")
_D2_BLOCK = re.compile(r"^res([2-5])\.(\d+)\.(conv[123]|shortcut|conv2_offset)\.(.+)$")
_D2_CONV = {"conv1": ("conv1", "bn1"), "conv2": ("conv2", "bn2"), "conv3": ("conv3", "bn3"),
            "shortcut": ("downsample.0", "downsample.1")}


def _unwrap(obj: Any, path: str) -> (Dict[str, Any], Dict[str, Any]):
    """(name -> array dict, the file's other top-level entries)."""
    if not isinstance(obj, dict):
        raise WeightsError(f"detectron2 weights {path!r} must be a dict, got {type(obj).__name__}")
    for wrapper in ("model", "blobs"):
        if isinstance(obj.get(wrapper), dict):
            return obj[wrapper], {k: v for k, v in obj.items() if k != wrapper}
    return obj, {}


def _tensor(value: Any, key: str, path: str) -> torch.Tensor:
    if not isinstance(value, np.ndarray):
        raise WeightsError(f"detectron2 weights {path!r}: entry {key!r} is a "
                           f"{type(value).__name__}, not a numpy array")
    return torch.from_numpy(np.ascontiguousarray(value).copy())


def _map_caffe2(source: SourceWeights, blobs: Dict[str, Any]) -> None:
    has_stats = set()
    for key, value in blobs.items():
        if _C2_IGNORED.search(key):
            source.ignored.append(key)
            continue
        if key in _C2_STEM:
            name = _C2_STEM[key]
        else:
            m = _C2_BLOCK.match(key)
            if not m:
                source.not_mapped.append(key)
                continue
            stage, block, branch, kind = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
            p = block_prefix(stage, block)
            if kind == "b":  # the bias blob of a bias-free conv (all zeros in these files)
                source.ignored.append(key)
                continue
            name = (f"{p}.{BRANCH_TO_MODULE[branch]}.weight" if kind == "w"
                    else f"{p}.{BRANCH_TO_NORM[branch]}.{_C2_BN[kind]}")
        source.add(name, _tensor(value, key, source.path), key)
        if name.endswith("running_mean"):
            has_stats.add(name[:-len(".running_mean")])
    # Scale/shift only: the statistics that make FrozenBatchNorm the same affine map.
    for name in [n for n in source.tensors if n.endswith(".weight")]:
        norm = name[:-len(".weight")]
        if norm + ".bias" in source.tensors and norm not in has_stats \
                and source.tensors[name].dim() == 1:
            channels = source.tensors[name].shape[0]
            source.tensors[norm + ".running_mean"] = torch.zeros(channels)
            source.tensors[norm + ".running_var"] = torch.ones(channels)


def _map_d2(source: SourceWeights, model: Dict[str, Any]) -> None:
    for key, value in model.items():
        name = key
        for prefix in _D2_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        ours = None
        if name.startswith("stem.conv1."):
            rest = name[len("stem.conv1."):]
            ours = "conv1.weight" if rest == "weight" else (
                f"bn1.{rest[len('norm.'):]}" if rest.startswith("norm.") else None)
        else:
            m = _D2_BLOCK.match(name)
            if m:
                p = block_prefix(int(m.group(1)), int(m.group(2)))
                module, rest = m.group(3), m.group(4)
                if module == "conv2_offset":
                    ours = f"{p}.conv2.conv_offset.{rest}"
                elif rest == "weight":
                    ours = f"{p}.{_D2_CONV[module][0]}.weight"
                elif rest.startswith("norm."):
                    ours = f"{p}.{_D2_CONV[module][1]}.{rest[len('norm.'):]}"
        if ours is None or ours.split(".")[-1] not in BN_FIELDS + ("num_batches_tracked",):
            if name.startswith("linear.") or name.startswith("fc."):
                source.ignored.append(key)
            else:
                source.not_mapped.append(key)
            continue
        source.add(ours, _tensor(value, key, source.path), key)


def read_detectron2(path: str) -> SourceWeights:
    """Reads and maps a Detectron/detectron2 ``.pkl`` file (see the module docstring)."""
    entries, meta = _unwrap(load_restricted(path), path)
    author = str(meta.get("__author__", ""))
    caffe2 = any(k in entries for k in _C2_STEM) or any(_C2_BLOCK.match(k) for k in entries)
    torchvision_origin = author == "torchvision"
    source = SourceWeights(path=path, format="detectron2",
                           stride_in_1x1=not torchvision_origin)
    if caffe2:
        _map_caffe2(source, entries)
    else:
        _map_d2(source, entries)
    if not torchvision_origin:
        flip_stem_to_rgb(source)
        source.pixel_mean, source.pixel_std = MSRA_MEAN_RGB, MSRA_STD
    return source
