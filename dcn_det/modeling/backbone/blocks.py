"""ResNet-v1 building blocks (BasicBlock, Bottleneck) with optional deformable 3x3 convs.

Module names follow torchvision's ResNet (``conv1/bn1/conv2/bn2/conv3/bn3/downsample.0/1``) so a
torchvision state dict maps onto them by name.

Which conv becomes deformable: always ``conv2``. In a Bottleneck ``conv2`` is the only 3x3 conv.
In a BasicBlock (two 3x3 convs) it is also ``conv2``, the block's last 3x3: this keeps "the
deformable conv of a block is ``conv2``" true for every depth, so weight mapping, the offset
convs' names (``layerX.Y.conv2.conv_offset``) and the offset visualisation treat all depths
alike, and its offsets are predicted at the block's output resolution. In a BasicBlock the
stride (first block of a stage) stays on ``conv1``, which remains a plain conv.
"""
from dataclasses import dataclass
from typing import Optional

from torch import nn

from dcn_det.modeling.layers import get_norm


@dataclass(frozen=True)
class DeformSpec:
    """How to build a deformable 3x3 conv: the variant and its settings.

    Attributes:
        modulated: True for ModulatedDeformConv2d (DCNv2), False for DeformConv2d (DCNv1).
        offset_groups: offset groups G (must divide the conv's input channels).
        offset_lr_mult: learning-rate multiplier for the offset conv (read by the optimizer
            builder from ``conv_offset.lr_mult``).
        offset_mode: ``"free"`` or ``"affine"``, the deformable conv's ``offset_mode``.
    """

    modulated: bool
    offset_groups: int
    offset_lr_mult: float
    offset_mode: str = "free"

    def __post_init__(self):
        # Checked here too so a bad mode fails even when no stage is deformable; the values
        # are dcn_det.ops.OFFSET_MODES (not imported: the plain backbone needs no compiled ops).
        if self.offset_mode not in ("free", "affine"):
            raise ValueError(f"deform_offset_mode must be 'free' or 'affine', got "
                             f"deform_offset_mode={self.offset_mode!r}")


def conv3x3(in_channels: int, out_channels: int, stride: int, dilation: int,
            deform: Optional[DeformSpec] = None) -> nn.Module:
    """A bias-free 3x3 conv with padding = dilation (size-preserving at stride 1).

    With ``deform`` set it is a DeformConv2d / ModulatedDeformConv2d from ``dcn_det.ops`` whose
    main weight is also named ``weight``; its zero-initialised ``conv_offset`` makes it start
    as this plain conv (modulated: with mask 0.5, i.e. half of it).
    """
    if deform is None:
        return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation,
                         dilation=dilation, bias=False)
    if in_channels % deform.offset_groups != 0:
        raise ValueError(
            f"deform_offset_groups={deform.offset_groups} must divide the input channels of "
            f"every deformable conv, but one has {in_channels} input channels")
    # Imported here so the plain backbone works even where the compiled ops are unavailable.
    from dcn_det.ops import DeformConv2d, ModulatedDeformConv2d
    cls = ModulatedDeformConv2d if deform.modulated else DeformConv2d
    return cls(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation,
               groups=1, offset_groups=deform.offset_groups, bias=False,
               offset_lr_mult=deform.offset_lr_mult, offset_mode=deform.offset_mode)


def downsample(in_channels: int, out_channels: int, stride: int, norm: str,
               gn_groups: int) -> Optional[nn.Sequential]:
    """The projection shortcut (1x1 conv + norm), or None when the identity fits."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        get_norm(norm, out_channels, gn_groups))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual (ResNet-18/34).

    ``stride_in_1x1`` does not apply (there is no 1x1 conv): the stride is on ``conv1``.

    Args:
        in_channels: input channels.
        bottleneck_channels: unused by this block (the stage width equals out_channels);
            accepted so both block types share one constructor signature.
        out_channels: output channels.
        stride: 1 or 2, applied by ``conv1`` and the shortcut.
        dilation: dilation (and padding) of both 3x3 convs.
        norm, gn_groups: see ``get_norm``.
        stride_in_1x1: ignored (see above).
        deform: make ``conv2`` deformable (see the module docstring).

    Shape:
        (N, in_channels, H, W) -> (N, out_channels, ceil(H/stride), ceil(W/stride)).
    """

    expansion = 1

    def __init__(self, *, in_channels: int, bottleneck_channels: int, out_channels: int,
                 stride: int, dilation: int, norm: str, gn_groups: int,
                 stride_in_1x1: bool, deform: Optional[DeformSpec] = None):
        super().__init__()
        del bottleneck_channels, stride_in_1x1
        self.conv1 = conv3x3(in_channels, out_channels, stride, dilation)
        self.bn1 = get_norm(norm, out_channels, gn_groups)
        self.conv2 = conv3x3(out_channels, out_channels, 1, dilation, deform)
        self.bn2 = get_norm(norm, out_channels, gn_groups)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample(in_channels, out_channels, stride, norm, gn_groups)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand, with a residual (ResNet-50/101).

    Args:
        in_channels: input channels.
        bottleneck_channels: channels of the 1x1-reduce and 3x3 convs (the stage width).
        out_channels: output channels (4x bottleneck_channels).
        stride: 1 or 2. On ``conv1`` (the 1x1) when ``stride_in_1x1`` (MSRA/Caffe ResNet-v1,
            the original Deformable ConvNets models), on ``conv2`` (the 3x3) otherwise
            (torchvision, "ResNet v1.5"). The shortcut always carries it.
        dilation: dilation (and padding) of the 3x3 conv.
        norm, gn_groups: see ``get_norm``.
        deform: make ``conv2`` (the 3x3) deformable.

    Shape:
        (N, in_channels, H, W) -> (N, out_channels, ceil(H/stride), ceil(W/stride)).
    """

    expansion = 4

    def __init__(self, *, in_channels: int, bottleneck_channels: int, out_channels: int,
                 stride: int, dilation: int, norm: str, gn_groups: int,
                 stride_in_1x1: bool, deform: Optional[DeformSpec] = None):
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, 1, stride=stride_1x1,
                               bias=False)
        self.bn1 = get_norm(norm, bottleneck_channels, gn_groups)
        self.conv2 = conv3x3(bottleneck_channels, bottleneck_channels, stride_3x3, dilation,
                             deform)
        self.bn2 = get_norm(norm, bottleneck_channels, gn_groups)
        self.conv3 = nn.Conv2d(bottleneck_channels, out_channels, 1, bias=False)
        self.bn3 = get_norm(norm, out_channels, gn_groups)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample(in_channels, out_channels, stride, norm, gn_groups)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)
