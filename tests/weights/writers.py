"""Writers of weights files in each supported format, with the real layouts and key names.

The official names are generated here from each project's naming scheme, independently of
``dcn_det.weights.names``, so the tests compare two readings of the scheme.

``reference`` is a dict in our names (what a tiny ResNet-101's ``state_dict()`` holds) filled
with distinct random values; each writer stores it under the format's names and layout.
"""
import pickle
import struct
from typing import Dict, Iterator, Tuple

import numpy as np
import torch

from dcn_det.modeling.backbone import ResNet

COUNTS_101 = (3, 4, 23, 3)
BN = ("weight", "bias", "running_mean", "running_var")


def tiny_resnet101(**kwargs) -> ResNet:
    """ResNet-101 at width 1/8 (stem 8 channels, res5 256): every stage, MSRA layout."""
    args = dict(depth=101, width_mult=0.125, stride_in_1x1=True, res5_dilation=2,
                freeze_at=0, out_features=("res4", "res5"))
    args.update(kwargs)
    return ResNet(**args)


def dcn_resnet101(**kwargs) -> ResNet:
    """The paper's DCN ResNet-101: deformable res5, 4 offset groups."""
    return tiny_resnet101(deform_stages=["res5"], deform_offset_groups=4, **kwargs)


def reference(model: ResNet, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Distinct random values for every tensor of ``model`` (variances positive)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        t = torch.randn(value.shape, generator=g)
        out[key] = t.abs() + 0.5 if key.endswith("running_var") else t
    return out


def blocks() -> Iterator[Tuple[int, int]]:
    """(stage 2..5, block from 0) of a ResNet-101, in network order."""
    for stage, count in zip(range(2, 6), COUNTS_101):
        for b in range(count):
            yield stage, b


def ours(stage: int, block: int) -> str:
    return f"layer{stage - 1}.{block}"


# ------------------------------------------------------------------ torchvision / mmdet

def torchvision_state(ref) -> Dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in ref.items() if ".conv_offset." not in k}
    state["fc.weight"] = torch.randn(1000, ref["layer4.0.conv3.weight"].shape[0])
    state["fc.bias"] = torch.randn(1000)
    for k in list(state):
        if k.endswith("running_var"):
            state[k[:-len("running_var")] + "num_batches_tracked"] = torch.tensor(7)
    return state


def mmdet_checkpoint(ref) -> dict:
    """An mmdetection detector checkpoint: DCN backbone, neck-less R-FCN-like heads, meta."""
    state = {f"backbone.{k}": v.clone() for k, v in ref.items()}
    state["rpn_head.rpn_conv.weight"] = torch.randn(16, 128, 3, 3)
    state["rpn_head.rpn_cls.weight"] = torch.randn(12, 16, 1, 1)
    state["roi_head.bbox_head.fc_cls.weight"] = torch.randn(81, 32)
    return {"meta": {"mmdet_version": "2.28.2", "epoch": 12, "CLASSES": ["a", "b"]},
            "state_dict": state}


# ------------------------------------------------------------------ detectron2 / Caffe2

def caffe2_name(stage: int, block: int, branch: str) -> str:
    """Detectron's ``res4_22_branch2c``."""
    return f"res{stage}_{block}_branch{branch}"


def caffe2_blobs(ref) -> Dict[str, np.ndarray]:
    """Detectron's MSRA ImageNet model: BN folded to scale/shift, BGR stem, extras."""
    def a(t):
        return t.numpy().astype(np.float32)

    blobs = {"conv1_w": a(ref["conv1.weight"].flip(1)),  # stored BGR
             "res_conv1_bn_s": a(ref["bn1.weight"]), "res_conv1_bn_b": a(ref["bn1.bias"])}
    for stage, b in blocks():
        p = ours(stage, b)
        branches = [("2a", "conv1", "bn1"), ("2b", "conv2", "bn2"), ("2c", "conv3", "bn3")]
        if b == 0:
            branches.append(("1", "downsample.0", "downsample.1"))
        for branch, conv, bn in branches:
            n = caffe2_name(stage, b, branch)
            blobs[f"{n}_w"] = a(ref[f"{p}.{conv}.weight"])
            blobs[f"{n}_bn_s"] = a(ref[f"{p}.{bn}.weight"])
            blobs[f"{n}_bn_b"] = a(ref[f"{p}.{bn}.bias"])
            blobs[f"{n}_w_momentum"] = np.zeros_like(blobs[f"{n}_w"])
    blobs["conv1_b"] = np.zeros(ref["conv1.weight"].shape[0], np.float32)
    blobs["pred_w"] = np.random.RandomState(0).randn(1000, 256).astype(np.float32)
    blobs["pred_b"] = np.zeros(1000, np.float32)
    return blobs


def d2_name(our_key: str) -> str:
    """Our name -> detectron2's backbone name (without ``backbone.bottom_up.``)."""
    parts = our_key.split(".")
    if parts[0] == "conv1":
        return "stem.conv1.weight"
    if parts[0] == "bn1":
        return f"stem.conv1.norm.{parts[1]}"
    stage = int(parts[0][len("layer"):]) + 1
    head = f"res{stage}.{parts[1]}"
    rest = parts[2:]
    if rest[:2] == ["conv2", "conv_offset"]:
        return f"{head}.conv2_offset.{rest[2]}"
    module = rest[0]
    if module == "downsample":
        return f"{head}.shortcut.{'weight' if rest[1] == '0' else 'norm.' + rest[2]}"
    if module.startswith("bn"):
        return f"{head}.conv{module[2:]}.norm.{rest[1]}"
    return f"{head}.{module}.weight"


def d2_model(ref, prefix: str = "backbone.bottom_up.") -> Dict[str, np.ndarray]:
    """A detectron2 model (model-zoo style): DCN res5, BGR stem, heads."""
    model = {}
    for k, v in ref.items():
        value = v.flip(1) if k == "conv1.weight" else v
        model[prefix + d2_name(k)] = value.numpy()
    model["proposal_generator.rpn_head.conv.weight"] = np.ones((16, 128, 3, 3), np.float32)
    model["roi_heads.box_predictor.cls_score.weight"] = np.ones((81, 32), np.float32)
    model["pixel_mean"] = np.array([[[103.53]], [[116.28]], [[123.675]]], np.float32)
    return model


def write_pickle(path, obj, protocol: int = 2) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


# ------------------------------------------------------------------ MXNet

def msra_block(stage: int, block: int) -> str:
    """The official ResNet-101 block names: res3b1..b3, res4b1..b22, letters elsewhere."""
    if block == 0:
        return f"{stage}a"
    if stage in (3, 4):
        return f"{stage}b{block}"
    return f"{stage}{'abc'[block]}"


def mxnet_params(ref, with_offsets: bool = True, with_head: bool = True) -> Dict[str, np.ndarray]:
    """The official Deformable ConvNets names (``arg:``/``aux:``) of ``ref``; RGB stem."""
    bn_names = {"weight": ("arg", "gamma"), "bias": ("arg", "beta"),
                "running_mean": ("aux", "moving_mean"), "running_var": ("aux", "moving_var")}
    out = {"arg:conv1_weight": ref["conv1.weight"].numpy()}
    for f, (kind, name) in bn_names.items():
        out[f"{kind}:bn_conv1_{name}"] = ref[f"bn1.{f}"].numpy()
    for stage, b in blocks():
        p, blk = ours(stage, b), msra_block(stage, b)
        branches = [("2a", "conv1", "bn1"), ("2b", "conv2", "bn2"), ("2c", "conv3", "bn3")]
        if b == 0:
            branches.append(("1", "downsample.0", "downsample.1"))
        for branch, conv, bn in branches:
            out[f"arg:res{blk}_branch{branch}_weight"] = ref[f"{p}.{conv}.weight"].numpy()
            for f, (kind, name) in bn_names.items():
                out[f"{kind}:bn{blk}_branch{branch}_{name}"] = ref[f"{p}.{bn}.{f}"].numpy()
        if with_offsets and f"{p}.conv2.conv_offset.weight" in ref:
            out[f"arg:res{blk}_branch2b_offset_weight"] = \
                ref[f"{p}.conv2.conv_offset.weight"].numpy()
            out[f"arg:res{blk}_branch2b_offset_bias"] = ref[f"{p}.conv2.conv_offset.bias"].numpy()
    if with_head:
        out["arg:rpn_conv_3x3_weight"] = np.ones((16, 128, 3, 3), np.float32)
        out["arg:rpn_conv_3x3_bias"] = np.zeros(16, np.float32)
        out["arg:conv_new_1_weight"] = np.ones((32, 256, 1, 1), np.float32)
        out["arg:rfcn_cls_weight"] = np.ones((7 * 7 * 81, 32, 1, 1), np.float32)
        out["arg:rfcn_bbox_weight"] = np.ones((7 * 7 * 8, 32, 1, 1), np.float32)
        out["arg:rfcn_cls_offset_t_weight"] = np.ones((2 * 7 * 7 * 81, 32, 1, 1), np.float32)
    return out


_FLAGS = {np.dtype("float32"): 0, np.dtype("float64"): 1, np.dtype("float16"): 2,
          np.dtype("uint8"): 3, np.dtype("int32"): 4, np.dtype("int8"): 5, np.dtype("int64"): 6}


def ndarray_bytes(array: np.ndarray, version: str = "v2") -> bytes:
    """One NDArray as ``NDArray::Save`` writes it (v2), or the older v1 / legacy layouts."""
    shape = array.shape
    if version == "v2":
        head = struct.pack("<Ii", 0xF993FAC9, 0) + \
            struct.pack(f"<I{len(shape)}q", len(shape), *shape)
    elif version == "v1":
        head = struct.pack("<I", 0xF993FAC8) + struct.pack(f"<I{len(shape)}q", len(shape), *shape)
    else:  # legacy: the magic slot holds ndim, dims are uint32
        head = struct.pack(f"<I{len(shape)}I", len(shape), *shape)
    ctx = struct.pack("<ii", 1, 0)  # cpu(0)
    flag = struct.pack("<i", _FLAGS[array.dtype])
    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    return head + ctx + flag + data


def params_bytes(arrays: Dict[str, np.ndarray], version: str = "v2") -> bytes:
    """An ``mx.nd.save`` file: list magic, arrays, names."""
    out = [struct.pack("<QQ", 0x112, 0), struct.pack("<Q", len(arrays))]
    out += [ndarray_bytes(a, version) for a in arrays.values()]
    out.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        raw = name.encode("utf-8")
        out.append(struct.pack("<Q", len(raw)) + raw)
    return b"".join(out)


def write_params(path, arrays: Dict[str, np.ndarray], version: str = "v2") -> None:
    with open(path, "wb") as f:
        f.write(params_bytes(arrays, version))
