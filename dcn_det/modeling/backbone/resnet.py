"""ResNet-v1 backbone (18/34/50/101) with a dilated res5 and deformable stages.

Stage names: ``stem`` (conv1 7x7/2 + norm + relu + maxpool 3x3/2, stride 4; the pool is a
``DeformMaxPool2d`` with ``stem_pool="deform_max"``), ``res2`` ..
``res5`` = torchvision's ``layer1`` .. ``layer4`` (strides 4, 8, 16, 32; res5 is 16 with
``res5_dilation`` 2 or 4). The max-pool pads by 1 like torchvision (Caffe's unpadded ceil-mode pool
gives the same size for even inputs).
"""
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from dcn_det.modeling.backbone.blocks import BasicBlock, Bottleneck, DeformSpec
from dcn_det.modeling.layers import NORM_NAMES, get_norm
from dcn_det.ops import DeformMaxPool2d

# depth -> (block type, blocks per stage res2..res5)
DEPTHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}
STAGE_NAMES = ("stem", "res2", "res3", "res4", "res5")
STEM_POOLS = ("max", "deform_max")
DEFORMABLE_STAGES = ("res3", "res4", "res5")
_STEM_WIDTH = 64
_STAGE_WIDTHS = (64, 128, 256, 512)  # bottleneck widths of res2..res5 at width_mult 1


def scaled_width(channels: int, width_mult: float) -> int:
    """``channels * width_mult`` rounded to a multiple of 8, at least 8.

    Multiples of 8 keep GroupNorm's group counts and offset groups dividing the widths.
    """
    return max(8, int(round(channels * width_mult / 8.0)) * 8)


class ResNet(nn.Module):
    """ResNet-v1 feature extractor for detection.

    Args:
        depth: 18, 34 (BasicBlock) or 50, 101 (Bottleneck).
        width_mult: multiplies the stem and every stage width (see ``scaled_width``); 1.0
            is the standard network, 0.125-0.25 gives tiny CPU models.
        stride_in_1x1: Bottleneck only: stride on the 1x1 conv (MSRA) instead of the 3x3.
        norm: ``"frozen_bn"``, ``"bn"``, ``"gn"`` or ``"syncbn"`` (see ``get_norm``).
        gn_groups: GroupNorm groups.
        freeze_at: 0 = train everything, 1 = freeze the stem, 2 = stem + res2, ...,
            5 = everything. Frozen parameters get ``requires_grad=False``; in frozen stages
            BatchNorm (``bn``/``syncbn``) is built as FrozenBatchNorm2d, so its statistics
            cannot drift either; GroupNorm stays GroupNorm with frozen affine parameters.
        res5_dilation: 1, or 2 / 4 for res5 with stride 1 and that dilation (and padding) on
            all its 3x3 convs: output stride 16. 2 is the Deformable ConvNets models' res5;
            4 is the paper's atrous alternative to deformable conv (its Table 3).
        deform_stages: subset of ``("res3", "res4", "res5")``; every block of these stages
            gets a deformable ``conv2`` (see ``blocks.py`` for which conv that is).
        deform_modulated: ModulatedDeformConv2d (DCNv2) instead of DeformConv2d (DCNv1).
            Its mask starts at sigmoid(0) = 0.5, as in DCNv2, so at initialisation a
            modulated stage computes half of each plain 3x3 conv's response.
        deform_offset_groups: offset groups of the deformable convs.
        deform_offset_lr_mult: learning-rate multiplier set on each ``conv_offset``.
        deform_offset_mode: ``"free"`` (a ``(dy, dx)`` per tap) or ``"affine"`` (an affine
            map of the kernel grid per location and offset group; DESIGN 4.1).
        stem_pool: ``"max"`` (the 3x3/2 max pool) or ``"deform_max"``: ``DeformMaxPool2d``
            with the same kernel, stride and padding, starting as the max pool. Its offset
            groups are ``deform_offset_groups`` when that divides the stem width, else 1; its
            offset conv gets ``deform_offset_lr_mult`` and is never frozen by ``freeze_at``
            (it has no pretrained weights, and frozen at zero it would be a plain max pool).
        out_features: names among ``STAGE_NAMES`` to return. Stages after the last one
            requested are not built (no unused parameters).

    Attributes:
        out_features: list of returned names, in network order.
        out_channels: dict name -> channels of that output.
        out_strides: dict name -> stride of that output w.r.t. the input image.
        stride_in_1x1: as given (``load_pretrained`` warns when the weights have the other layout).

    Shape:
        forward(x (N, 3, H, W), normalised image) -> {name: (N, out_channels[name],
        ceil(H / out_strides[name]), ceil(W / out_strides[name]))}; exact ``H / stride``
        when H and W are multiples of 32.
    """

    def __init__(self, *, depth: int = 50, width_mult: float = 1.0, stride_in_1x1: bool = True,
                 norm: str = "frozen_bn", gn_groups: int = 32, freeze_at: int = 2,
                 res5_dilation: int = 1, deform_stages: Sequence[str] = (),
                 deform_modulated: bool = False, deform_offset_groups: int = 1,
                 deform_offset_lr_mult: float = 1.0,
                 deform_offset_mode: str = "free",
                 out_features: Sequence[str] = ("res4", "res5"), stem_pool: str = "max"):
        super().__init__()
        self._check_args(depth, width_mult, norm, freeze_at, res5_dilation, deform_stages,
                         deform_offset_groups, out_features)
        if stem_pool not in STEM_POOLS:
            raise ValueError(f"stem_pool must be one of {list(STEM_POOLS)}, got {stem_pool!r}")
        block, counts = DEPTHS[depth]
        self.depth = depth
        self.stride_in_1x1 = bool(stride_in_1x1)
        self.freeze_at = freeze_at
        self.out_features: List[str] = [n for n in STAGE_NAMES if n in set(out_features)]
        last = max(STAGE_NAMES.index(n) for n in self.out_features)

        def norm_for(stage_index: int) -> str:
            frozen = stage_index < freeze_at
            return "frozen_bn" if frozen and norm in ("bn", "syncbn") else norm

        stem_width = scaled_width(_STEM_WIDTH, width_mult)
        self.conv1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = get_norm(norm_for(0), stem_width, gn_groups)
        self.relu = nn.ReLU(inplace=True)
        if stem_pool == "deform_max":
            groups = deform_offset_groups if stem_width % deform_offset_groups == 0 else 1
            self.maxpool = DeformMaxPool2d(stem_width, 3, stride=2, padding=1,
                                           offset_groups=groups,
                                           offset_lr_mult=float(deform_offset_lr_mult))
        else:
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels: Dict[str, int] = {"stem": stem_width}
        strides: Dict[str, int] = {"stem": 4}

        deform = DeformSpec(modulated=bool(deform_modulated), offset_groups=deform_offset_groups,
                            offset_lr_mult=float(deform_offset_lr_mult),
                            offset_mode=deform_offset_mode)
        in_channels, stride_so_far = stem_width, 4
        for i in range(1, last + 1):
            name = STAGE_NAMES[i]
            width = scaled_width(_STAGE_WIDTHS[i - 1], width_mult)
            out_channels = width * block.expansion
            dilated = name == "res5" and res5_dilation > 1
            first_stride = 1 if i == 1 or dilated else 2
            layer = self._make_stage(
                block, counts[i - 1], in_channels=in_channels, bottleneck_channels=width,
                out_channels=out_channels, first_stride=first_stride,
                dilation=res5_dilation if name == "res5" else 1, norm=norm_for(i),
                gn_groups=gn_groups, stride_in_1x1=stride_in_1x1,
                deform=deform if name in deform_stages else None)
            self.add_module(f"layer{i}", layer)
            in_channels, stride_so_far = out_channels, stride_so_far * first_stride
            channels[name], strides[name] = out_channels, stride_so_far

        self.out_channels = {n: channels[n] for n in self.out_features}
        self.out_strides = {n: strides[n] for n in self.out_features}
        self._init_weights()
        self._freeze(freeze_at)

    @staticmethod
    def _check_args(depth, width_mult, norm, freeze_at, res5_dilation, deform_stages,
                    deform_offset_groups, out_features) -> None:
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth!r}")
        if not isinstance(width_mult, (int, float)) or not width_mult > 0:
            raise ValueError(f"width_mult must be a positive number, got {width_mult!r}")
        if norm not in NORM_NAMES:
            raise ValueError(f"norm must be one of {list(NORM_NAMES)}, got {norm!r}")
        if not isinstance(freeze_at, int) or not 0 <= freeze_at <= 5:
            raise ValueError(f"freeze_at must be an int in 0..5, got {freeze_at!r}")
        if res5_dilation not in (1, 2, 4):
            raise ValueError(f"res5_dilation must be 1, 2 or 4, got {res5_dilation!r}")
        bad = [s for s in deform_stages if s not in DEFORMABLE_STAGES]
        if isinstance(deform_stages, str) or bad:
            raise ValueError(f"deform_stages must be a list drawn from "
                             f"{list(DEFORMABLE_STAGES)}, got {deform_stages!r}")
        if not isinstance(deform_offset_groups, int) or deform_offset_groups <= 0:
            raise ValueError(
                f"deform_offset_groups must be a positive int, got {deform_offset_groups!r}")
        bad = [s for s in out_features if s not in STAGE_NAMES]
        if isinstance(out_features, str) or not out_features or bad:
            raise ValueError(f"out_features must be a non-empty list drawn from "
                             f"{list(STAGE_NAMES)}, got {out_features!r}")

    @staticmethod
    def _make_stage(block, count: int, *, in_channels: int, bottleneck_channels: int,
                    out_channels: int, first_stride: int, dilation: int, norm: str,
                    gn_groups: int, stride_in_1x1: bool, deform) -> nn.Sequential:
        blocks = []
        for b in range(count):
            blocks.append(block(
                in_channels=in_channels if b == 0 else out_channels,
                bottleneck_channels=bottleneck_channels, out_channels=out_channels,
                stride=first_stride if b == 0 else 1, dilation=dilation, norm=norm,
                gn_groups=gn_groups, stride_in_1x1=stride_in_1x1, deform=deform))
        return nn.Sequential(*blocks)

    def _init_weights(self) -> None:
        for name, m in self.named_modules():
            # The offset convs are zero-initialised by the op so a deformable conv starts as a
            # plain one; re-initialising them would break that.
            if name.endswith("conv_offset"):
                continue
            # A deformable conv has a weight beside its conv_offset; DeformMaxPool2d has none.
            if isinstance(m, nn.Conv2d) or (hasattr(m, "conv_offset") and hasattr(m, "weight")):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _freeze(self, freeze_at: int) -> None:
        frozen = [self.conv1, self.bn1] if freeze_at >= 1 else []
        frozen += [getattr(self, f"layer{i}") for i in range(1, freeze_at)
                   if hasattr(self, f"layer{i}")]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)

    def stages(self) -> List[Tuple[str, nn.Module]]:
        """The built stages res2.. in order, as ``(name, module)`` pairs."""
        return [(STAGE_NAMES[i], getattr(self, f"layer{i}")) for i in range(1, 5)
                if hasattr(self, f"layer{i}")]

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.size(1) != 3:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"ResNet input x must have shape (N, 3, H, W), got {got}")
        outputs = {}
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        if "stem" in self.out_features:
            outputs["stem"] = x
        for name, stage in self.stages():
            x = stage(x)
            if name in self.out_features:
                outputs[name] = x
        return outputs

    def extra_repr(self) -> str:
        return (f"depth={self.depth}, stride_in_1x1={self.stride_in_1x1}, "
                f"freeze_at={self.freeze_at}, out_features={self.out_features}")

