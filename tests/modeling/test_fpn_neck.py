"""The FPN neck: level shapes for odd image sizes, the top-down pathway, detectron2's init,
and the backbone it reads (res2-res5, res5 undilated, deformable res3-res5)."""
import math

import pytest
import torch
import torch.nn.functional as F

from dcn_det.modeling.backbone import ResNet
from dcn_det.modeling.neck import FPN, c2_xavier_fill


def _resnet(**kwargs):
    return ResNet(depth=18, width_mult=0.125, norm="bn", freeze_at=0,
                  out_features=("res2", "res3", "res4", "res5"), **kwargs)


@pytest.mark.parametrize("deform", [dict(), dict(deform_stages=["res3", "res4", "res5"]),
                                    dict(deform_stages=["res3", "res4", "res5"],
                                         deform_modulated=True)])
def test_levels_of_an_odd_image(deform):
    body = _resnet(deform_offset_groups=2, **deform).eval()
    fpn = FPN(in_channels=[body.out_channels[n] for n in ("res2", "res3", "res4", "res5")],
              in_strides=[body.out_strides[n] for n in ("res2", "res3", "res4", "res5")],
              out_channels=24)
    x = torch.randn(1, 3, 97, 131)
    feats = body(x)
    out = fpn(feats)
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    assert fpn.out_strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    # Each Pk has res_k's size: ceil(97 / 2^k), ceil(131 / 2^k); P6 halves P5 (ceil).
    want = {"p2": (25, 33), "p3": (13, 17), "p4": (7, 9), "p5": (4, 5), "p6": (2, 3)}
    for name, hw in want.items():
        assert tuple(out[name].shape) == (1, 24) + hw, name
    out["p2"].sum().backward()  # gradients flow through every lateral (deformable ones too)
    assert all(p.grad is not None for p in fpn.lateral_convs.parameters())


def test_top_down_sum_by_hand():
    """P_k = output_k(lateral_k(res_k) + nearest-upsampled t_{k+1}), in float64."""
    torch.manual_seed(0)
    fpn = FPN(in_channels=[3, 4, 5, 6], in_strides=[4, 8, 16, 32], out_channels=2).double()
    feats = {"res2": torch.randn(1, 3, 9, 11), "res3": torch.randn(1, 4, 5, 6),
             "res4": torch.randn(1, 5, 3, 3), "res5": torch.randn(1, 6, 2, 2)}
    feats = {k: v.double() for k, v in feats.items()}
    out = fpn(feats)
    t5 = fpn.lateral_convs[3](feats["res5"])
    # Nearest upsampling to 3x3 of a 2x2 map repeats rows/columns 0, 0, 1 (floor(i * 2 / 3)).
    up = t5[:, :, [0, 0, 1]][:, :, :, [0, 0, 1]]
    t4 = fpn.lateral_convs[2](feats["res4"]) + up
    torch.testing.assert_close(out["p5"], fpn.output_convs[3](t5))
    torch.testing.assert_close(out["p4"], fpn.output_convs[2](t4))
    torch.testing.assert_close(out["p6"], out["p5"][:, :, ::2, ::2])


def test_c2_xavier_init():
    torch.manual_seed(0)
    fpn = FPN(in_channels=[64, 64, 64, 64], in_strides=[4, 8, 16, 32], out_channels=32)
    for conv in list(fpn.lateral_convs) + list(fpn.output_convs):
        fan_in = conv.weight[0].numel()
        bound = math.sqrt(3.0 / fan_in)  # kaiming_uniform(a=1): gain 1, uniform +-sqrt(3/fan_in)
        assert float(conv.weight.detach().abs().max()) <= bound
        assert float(conv.weight.detach().abs().max()) > 0.9 * bound
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    conv = torch.nn.Conv2d(8, 4, 3)
    c2_xavier_fill(conv)
    assert float(conv.bias.detach().abs().sum()) == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="res5_dilation: 1"):
        FPN(in_channels=[1, 2, 3, 4], in_strides=[4, 8, 16, 16])
    with pytest.raises(ValueError, match="4 values"):
        FPN(in_channels=[1, 2, 3], in_strides=[4, 8, 16])
    fpn = FPN(in_channels=[1, 2, 3, 4], in_strides=[4, 8, 16, 32], out_channels=4)
    with pytest.raises(ValueError, match="missing"):
        fpn({"res4": torch.zeros(1, 3, 2, 2), "res5": torch.zeros(1, 4, 1, 1)})


def test_upsample_reaches_the_lateral_size_not_twice_the_coarse():
    """A ceil-rounded coarse map doubled is one cell too large for an odd lateral."""
    fpn = FPN(in_channels=[1, 1, 1, 1], in_strides=[4, 8, 16, 32], out_channels=1)
    feats = {"res2": torch.randn(1, 1, 13, 7), "res3": torch.randn(1, 1, 7, 4),
             "res4": torch.randn(1, 1, 4, 2), "res5": torch.randn(1, 1, 2, 1)}
    assert tuple(F.interpolate(feats["res3"], scale_factor=2.0).shape[-2:]) != (13, 7)
    assert tuple(fpn(feats)["p2"].shape[-2:]) == (13, 7)
