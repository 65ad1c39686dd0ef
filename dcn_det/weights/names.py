"""Our backbone's tensor names, and the stage/block naming schemes of the other formats.

Our names (torchvision's, DESIGN 5): the stem is ``conv1.weight`` and ``bn1.{weight, bias,
running_mean, running_var}``; stage ``s`` (2..5, the papers' res2..res5) is ``layer{s-1}``;
block ``b`` of it has ``conv1/conv2/conv3.weight``, ``bn1/bn2/bn3.*``, on its first block the
projection shortcut ``downsample.0.weight`` (conv) and ``downsample.1.*`` (its BN), and a
deformable 3x3 conv keeps its weight as ``conv2.weight`` and its offset conv as
``conv2.conv_offset.{weight, bias}``.

The MSRA/Caffe scheme (the MXNet Deformable ConvNets models, the Caffe ResNets) names a block
with its stage and a letter: ``res2a``, ``res2b``, ... For ResNet-101 and deeper, stages 3 and 4
number the blocks after the first instead: ``res3a, res3b1..res3b3`` and ``res4a,
res4b1..res4b22`` (ResNet-50 keeps letters everywhere: ``res4a..res4f``). Caffe2/Detectron
counts from zero: ``res4_0 .. res4_22``.
"""
import re
from typing import Dict, List, Optional, Tuple

# depth -> blocks in res2..res5 (the Bottleneck ResNets these formats hold)
BLOCK_COUNTS: Dict[int, Tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
}
BN_FIELDS = ("weight", "bias", "running_mean", "running_var")
# Caffe branch -> our module inside the block
BRANCH_TO_MODULE = {"1": "downsample.0", "2a": "conv1", "2b": "conv2", "2c": "conv3"}
BRANCH_TO_NORM = {"1": "downsample.1", "2a": "bn1", "2b": "bn2", "2c": "bn3"}


def block_prefix(stage: int, block: int) -> str:
    """Our name of block ``block`` (from 0) of stage ``stage`` (2..5): ``layer{stage-1}.{b}``."""
    return f"layer{stage - 1}.{block}"


def resnet_keys(depth: int, deformable_stages=()) -> List[str]:
    """Every tensor name of our Bottleneck ResNet of that depth with FrozenBatchNorm.

    Args:
        depth: 50 or 101.
        deformable_stages: stage numbers (3..5) whose blocks have ``conv2.conv_offset.*``.

    Returns:
        The names in network order (what ``ResNet(depth=...).state_dict()`` holds with
        ``norm="frozen_bn"`` and every stage built).
    """
    if depth not in BLOCK_COUNTS:
        raise ValueError(f"depth must be one of {sorted(BLOCK_COUNTS)}, got {depth!r}")
    keys = ["conv1.weight"] + [f"bn1.{f}" for f in BN_FIELDS]
    for stage, count in zip(range(2, 6), BLOCK_COUNTS[depth]):
        for block in range(count):
            p = block_prefix(stage, block)
            for i in (1, 2, 3):
                keys.append(f"{p}.conv{i}.weight")
                if i == 2 and stage in deformable_stages:
                    keys += [f"{p}.conv2.conv_offset.weight", f"{p}.conv2.conv_offset.bias"]
                keys += [f"{p}.bn{i}.{f}" for f in BN_FIELDS]
            if block == 0:
                keys.append(f"{p}.downsample.0.weight")
                keys += [f"{p}.downsample.1.{f}" for f in BN_FIELDS]
    return keys


def msra_block_name(stage: int, block: int, depth: int) -> str:
    """The MSRA/Caffe name of a block: ``2a``, ``4b22`` (ResNet-101), ``4f`` (ResNet-50)."""
    if block == 0:
        return f"{stage}a"
    if depth >= 101 and stage in (3, 4):
        return f"{stage}b{block}"
    return f"{stage}{chr(ord('a') + block)}"


_MSRA_BLOCK = re.compile(r"^([2-5])([a-z])(\d*)$")


def parse_msra_block(name: str) -> Optional[Tuple[int, int]]:
    """``"4b22"`` -> ``(4, 22)``, ``"4f"`` -> ``(4, 5)``, ``"2a"`` -> ``(2, 0)``; None otherwise.

    Both schemes are read without knowing the depth: a letter followed by digits is the
    numbered scheme (``b<n>`` is block n), a bare letter is block ``letter - 'a'``.
    """
    m = _MSRA_BLOCK.match(name)
    if not m:
        return None
    stage, letter, digits = int(m.group(1)), m.group(2), m.group(3)
    if digits:
        return (stage, int(digits)) if letter == "b" and int(digits) >= 1 else None
    return stage, ord(letter) - ord("a")


def depth_from_keys(keys) -> Optional[int]:
    """50 or 101 from which of our ``layer3.N`` blocks are present (6 or 23), else None."""
    blocks = {int(k.split(".")[1]) for k in keys
              if k.startswith("layer3.") and k.split(".")[1].isdigit()}
    if not blocks:
        return None
    count = max(blocks) + 1
    return next((d for d, c in BLOCK_COUNTS.items() if c[2] == count), None)
