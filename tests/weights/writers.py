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


# ------------------------------------------------------------------ whole detectors

HEAD = "roi_heads.box_head."
OFFICIAL_STDS = (0.1, 0.1, 0.2, 0.2)


def detector_reference(model, seed: int = 0) -> Dict[str, torch.Tensor]:
    """``reference`` of a whole detector (our names, ``backbone.`` included)."""
    return reference(model, seed)


def bg_first(t: torch.Tensor, block: int) -> torch.Tensor:
    """Our background-last class blocks in the official order (background block first)."""
    return torch.cat((t[-block:], t[:-block]))


def _backbone_params(ref) -> Dict[str, np.ndarray]:
    backbone = {k[len("backbone."):]: v for k, v in ref.items() if k.startswith("backbone.")}
    return mxnet_params(backbone, with_head=False)


def _rpn_params(ref) -> Dict[str, np.ndarray]:
    out = {}
    for official, ours in (("rpn_conv_3x3", "rpn.head.conv"),
                           ("rpn_cls_score", "rpn.head.cls_logits"),
                           ("rpn_bbox_pred", "rpn.head.bbox_pred")):
        for f in ("weight", "bias"):
            out[f"arg:{official}_{f}"] = ref[f"{ours}.{f}"].numpy()
    return out


def mxnet_rfcn_dcn(ref, group_size: int = 7, test_copies: bool = True,
                   only_test_copies: bool = False) -> Dict[str, np.ndarray]:
    """The official ``resnet_v1_101_rfcn_dcn`` parameters of detector reference ``ref``.

    Every name of the symbol: the ResNet-101 with deformable res5 (``_backbone_params``),
    ``rpn_conv_3x3``, ``rpn_cls_score`` (2A, background maps first, as ours),
    ``rpn_bbox_pred``, ``conv_new_1``, ``rfcn_cls`` / ``rfcn_bbox`` / ``rfcn_cls_offset_t``
    with the background class (box slot) FIRST, ``rfcn_bbox_offset_t``, and the
    ``rfcn_bbox_{weight,bias}_test`` copies the official checkpoint callback adds (the box maps
    times the stds, ``np.repeat(np.tile(stds, slots), G*G)``).
    """
    gg = group_size * group_size
    out = dict(_backbone_params(ref), **_rpn_params(ref))
    for official, ours, block in (("conv_new_1", "conv_new", None), ("rfcn_cls", "rfcn_cls", gg),
                                  ("rfcn_bbox", "rfcn_bbox", 4 * gg),
                                  ("rfcn_cls_offset_t", "cls_offset", 2 * gg),
                                  ("rfcn_bbox_offset_t", "bbox_offset", None)):
        for f in ("weight", "bias"):
            t = ref[f"{HEAD}{ours}.{f}"]
            out[f"arg:{official}_{f}"] = (bg_first(t, block) if block else t).numpy()
    slots = out["arg:rfcn_bbox_bias"].shape[0] // (4 * gg)
    stds = np.repeat(np.tile(np.array(OFFICIAL_STDS, np.float32), slots), gg)
    if test_copies or only_test_copies:
        out["arg:rfcn_bbox_weight_test"] = out["arg:rfcn_bbox_weight"] * stds[:, None, None, None]
        out["arg:rfcn_bbox_bias_test"] = out["arg:rfcn_bbox_bias"] * stds
    if only_test_copies:
        del out["arg:rfcn_bbox_weight"], out["arg:rfcn_bbox_bias"]
    return out


def mxnet_rcnn_dcn(ref, only_test_copies: bool = False) -> Dict[str, np.ndarray]:
    """The official ``resnet_v1_101_rcnn_dcn`` (deformable RoI pooling) parameters of ``ref``.

    ``conv_new_1``, ``offset`` (the offset fc), ``fc_new_1``, ``fc_new_2``, ``cls_score``
    (background row first) and ``bbox_pred`` with the official background box slot first (4
    untrained rows, random here) before ours (one slot class-agnostic, else one per class).
    """
    g = torch.Generator().manual_seed(11)
    out = dict(_backbone_params(ref), **_rpn_params(ref))
    for official, ours in (("conv_new_1", "conv_new"), ("offset", "offset_fc"),
                           ("fc_new_1", "fc1"), ("fc_new_2", "fc2")):
        for f in ("weight", "bias"):
            out[f"arg:{official}_{f}"] = ref[f"{HEAD}{ours}.{f}"].numpy()
    for f in ("weight", "bias"):
        out[f"arg:cls_score_{f}"] = bg_first(ref[f"{HEAD}cls_score.{f}"], 1).numpy()
        box = ref[f"{HEAD}bbox_pred.{f}"]
        bg_slot = torch.randn((4,) + tuple(box.shape[1:]), generator=g)
        out[f"arg:bbox_pred_{f}"] = torch.cat((bg_slot, box)).numpy()
    if only_test_copies:
        rows = out["arg:bbox_pred_bias"].shape[0]
        stds = np.tile(np.array(OFFICIAL_STDS, np.float32), rows // 4)
        out["arg:bbox_pred_weight_test"] = out.pop("arg:bbox_pred_weight") * stds[:, None]
        out["arg:bbox_pred_bias_test"] = out.pop("arg:bbox_pred_bias") * stds
    return out


MMDET_CAFFE_C4_CONFIG = """model = dict(
    type='FasterRCNN',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[103.530, 116.280, 123.675],
        std=[1.0, 1.0, 1.0],
        bgr_to_rgb=False,
        pad_size_divisor=32),
    backbone=dict(type='ResNet', depth=50, num_stages=3, strides=(1, 2, 2),
                  out_indices=(2, ), frozen_stages=1, norm_eval=True, style='caffe'),
    rpn_head=dict(type='RPNHead', in_channels=1024, feat_channels=1024,
                  loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    roi_head=dict(type='StandardRoIHead',
                  shared_head=dict(type='ResLayer', depth=50, stage=3, stride=2, style='caffe'),
                  bbox_head=dict(type='BBoxHead', with_avg_pool=True, num_classes=80,
                                 bbox_coder=dict(target_stds=[0.1, 0.1, 0.2, 0.2]),
                                 reg_class_agnostic=False)))
"""


def mmdet_c4_checkpoint(ref, num_classes: int = 80, config_text: str = MMDET_CAFFE_C4_CONFIG,
                        softmax_rpn: bool = False) -> dict:
    """An mmdetection ``faster-rcnn_r50-caffe-c4`` checkpoint of detector reference ``ref``.

    ``backbone.*`` up to ``layer3`` (BGR stem as caffe-style models are trained, BN with step
    counters), ``roi_head.shared_head.layer4.*`` (res5), ``rpn_head.rpn_conv/rpn_cls/rpn_reg``
    with a sigmoid objectness (the foreground-minus-background of ``ref``'s softmax pair, which
    scores the same), ``roi_head.bbox_head.fc_cls`` (K+1) / ``fc_reg`` (4K) on the pooled
    res5, and mmdetection 3's ``meta`` (the config text, ``dataset_meta.classes``).
    """
    state = {}
    for k, v in ref.items():
        if k.startswith("backbone.layer4."):
            state["roi_head.shared_head." + k[len("backbone."):]] = v.clone()
        elif k.startswith("backbone."):
            state[k] = v.flip(1).clone() if k == "backbone.conv1.weight" else v.clone()
            if k.endswith("running_var"):
                state[k[:-len("running_var")] + "num_batches_tracked"] = torch.tensor(5)
    a = ref["rpn.head.cls_logits.bias"].shape[0] // 2
    for f in ("weight", "bias"):
        state[f"rpn_head.rpn_conv.{f}"] = ref[f"rpn.head.conv.{f}"].clone()
        pair = ref[f"rpn.head.cls_logits.{f}"]
        if softmax_rpn:  # mmdetection's interleaved (fg, bg) per anchor
            state[f"rpn_head.rpn_cls.{f}"] = pair.clone()
        else:
            state[f"rpn_head.rpn_cls.{f}"] = pair[a:] - pair[:a]
        state[f"rpn_head.rpn_reg.{f}"] = ref[f"rpn.head.bbox_pred.{f}"].clone()
    res5 = ref["backbone.layer4.0.conv3.weight"].shape[0]
    state["roi_head.bbox_head.fc_cls.weight"] = torch.randn(num_classes + 1, res5)
    state["roi_head.bbox_head.fc_cls.bias"] = torch.randn(num_classes + 1)
    state["roi_head.bbox_head.fc_reg.weight"] = torch.randn(4 * num_classes, res5)
    state["roi_head.bbox_head.fc_reg.bias"] = torch.randn(4 * num_classes)
    meta = {"mmdet_version": "3.3.0", "epoch": 12,
            "dataset_meta": {"classes": [f"c{i}" for i in range(num_classes)]}}
    if config_text is not None:
        meta["cfg"] = config_text
    return {"meta": meta, "state_dict": state}
