"""Feature pyramid network (Lin et al. 2017) in detectron2's form, with P6 for the RPN.

    res5 -> lateral 1x1 -> t5 -> output 3x3 -> P5 -> max-pool (kernel 1, stride 2) -> P6
    res4 -> lateral 1x1 + nearest-upsample(t5) = t4 -> output 3x3 -> P4
    res3 -> ... -> P3,  res2 -> ... -> P2

All levels have ``out_channels`` channels; there is no activation and no normalisation (as in
detectron2's default and the official Deformable FPN). The upsampling goes to the lateral's
exact size rather than by a factor 2, so images whose sides are not multiples of 32 (odd
feature sizes) work: a ceil-rounded coarse map upsampled x2 can be one cell larger than the
finer lateral. detectron2 and the official code build P6 differently (detectron2's RPN:
max-pool of P5; the official Deformable FPN: a 3x3 stride-2 conv on res5); this follows
detectron2.
"""
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# The backbone stages the FPN reads and the levels it returns.
IN_FEATURES = ("res2", "res3", "res4", "res5")
OUT_FEATURES = ("p2", "p3", "p4", "p5", "p6")


def c2_xavier_fill(module: nn.Module) -> None:
    """detectron2's ``c2_xavier_fill``: Caffe2's XavierFill, i.e. ``kaiming_uniform_`` with
    ``a=1`` (uniform in +-sqrt(3 / fan_in)), and a zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class FPN(nn.Module):
    """Top-down feature pyramid over res2-res5 plus a max-pooled P6.

    Args:
        in_channels: channels of res2, res3, res4, res5, in that order.
        in_strides: strides of res2..res5 w.r.t. the input image; each must be twice the
            previous one (res5 undilated: 4, 8, 16, 32).
        out_channels: channels of every output level (256).

    Attributes:
        out_features: ``["p2", "p3", "p4", "p5", "p6"]``.
        out_channels, out_strides: dicts level -> channels / stride (4, 8, 16, 32, 64).

    Shape:
        forward({"res2": (N, C2, H2, W2), ..., "res5": (N, C5, H5, W5)}) ->
        {"p2": (N, out_channels, H2, W2), ..., "p5": (N, out_channels, H5, W5),
        "p6": (N, out_channels, ceil(H5 / 2), ceil(W5 / 2))}: each Pk has res_k's size.
    """

    def __init__(self, *, in_channels: Sequence[int], in_strides: Sequence[int],
                 out_channels: int = 256):
        super().__init__()
        if len(in_channels) != len(IN_FEATURES) or len(in_strides) != len(IN_FEATURES):
            raise ValueError(f"FPN needs in_channels and in_strides of {list(IN_FEATURES)} (4 "
                             f"values each), got {list(in_channels)} and {list(in_strides)}")
        if any(b != 2 * a for a, b in zip(in_strides, in_strides[1:])):
            raise ValueError(
                f"FPN in_strides must double from level to level (res5 undilated), got "
                f"{list(in_strides)}; with FPN set model.backbone.res5_dilation: 1")
        if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 1:
            raise ValueError(f"FPN out_channels must be a positive int, got {out_channels!r}")
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1)
                                          for _ in in_channels)
        for conv in list(self.lateral_convs) + list(self.output_convs):
            c2_xavier_fill(conv)
        self.out_features: List[str] = list(OUT_FEATURES)
        strides = list(in_strides) + [2 * in_strides[-1]]
        self.out_channels: Dict[str, int] = {n: out_channels for n in OUT_FEATURES}
        self.out_strides: Dict[str, int] = dict(zip(OUT_FEATURES, (int(s) for s in strides)))

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        missing = [n for n in IN_FEATURES if n not in features]
        if missing:
            raise ValueError(f"FPN needs backbone features {list(IN_FEATURES)}, missing "
                             f"{missing} (got {sorted(features)})")
        xs = [features[n] for n in IN_FEATURES]
        top = self.lateral_convs[-1](xs[-1])
        outs = [self.output_convs[-1](top)]
        for i in range(len(xs) - 2, -1, -1):
            lateral = self.lateral_convs[i](xs[i])
            # To the lateral's exact size: see the module docstring (odd sizes).
            top = lateral + F.interpolate(top, size=lateral.shape[-2:], mode="nearest")
            outs.insert(0, self.output_convs[i](top))
        # detectron2's LastLevelMaxPool: P6 subsamples P5 (kernel 1, stride 2).
        outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2, padding=0))
        return dict(zip(OUT_FEATURES, outs))
