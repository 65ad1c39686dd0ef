"""Sampling locations of deformable convs and their composition through stacked layers.

The one-layer checks use the op itself as the oracle: on an input whose channels are the
ramps x and y and the constant 1, a one-hot weight makes output channel (tap k, ramp) read the
bilinear sample of that ramp at tap k's sampling location, i.e. the location itself (and the
mask from the constant channel).
"""
import itertools

import pytest
import torch
from torch import nn

from dcn_det.analysis import (DeformLayerRecord, OffsetCapture, bilinear_sample,
                              compose_sampling_points, sampling_locations, select_chain)
from dcn_det.ops import DeformConv2d, ModulatedDeformConv2d


def _ramp_input(groups, h, w):
    """(1, 3*groups, h, w): per offset group the channels x, y, 1."""
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                          torch.arange(w, dtype=torch.float64), indexing="ij")
    return torch.stack([x, y, torch.ones_like(x)] * groups)[None]


def _reader_conv(cls, groups, stride, padding, dilation):
    """A deformable 3x3 conv whose output channel (g, k, c) reads channel c of group g at tap k."""
    conv = cls(3 * groups, 3 * groups * 9, 3, stride=stride, padding=padding, dilation=dilation,
               offset_groups=groups, bias=False).double()
    with torch.no_grad():
        conv.weight.zero_()
        for g, k, c in itertools.product(range(groups), range(9), range(3)):
            conv.weight[(g * 9 + k) * 3 + c, g * 3 + c, k // 3, k % 3] = 1.0
        conv.conv_offset.weight.normal_(0.0, 0.01)
        conv.conv_offset.bias.uniform_(-0.7, 0.7)
    return conv


@pytest.mark.parametrize("cls", [DeformConv2d, ModulatedDeformConv2d])
@pytest.mark.parametrize("stride,padding,dilation", [(1, 2, 2), (2, 1, 1)])
def test_one_layer_points_match_the_op(cls, stride, padding, dilation):
    groups, h, w = 2, 14, 15
    conv = _reader_conv(cls, groups, stride, padding, dilation)
    x = _ramp_input(groups, h, w)
    with OffsetCapture(conv) as cap, torch.no_grad():
        out = conv(x)[0]  # (G*9*3, H_out, W_out)
    rec = cap.records["conv"]
    assert rec.input_stride == 1 and rec.output_stride == stride
    ho, wo = out.shape[1:]
    read = out.reshape(groups, 9, 3, ho, wo)
    ii, jj = torch.meshgrid(torch.arange(ho), torch.arange(wo), indexing="ij")
    units = torch.stack((jj, ii), -1).reshape(-1, 2).float()
    checked = 0
    for g in range(groups):
        mask = read[g, :, 2].reshape(9, -1).t()  # (units, 9)
        op_xy = torch.stack((read[g, :, 0], read[g, :, 1]), -1).reshape(9, -1, 2).transpose(0, 1)
        op_xy = op_xy / mask[..., None]
        pts, m = sampling_locations(rec, units, group=g)
        # Where all four bilinear corners are inside the input, the ramps read back exactly.
        inside = ((pts[..., 0] >= 0) & (pts[..., 0] <= w - 1) & (pts[..., 1] >= 0)
                  & (pts[..., 1] <= h - 1)).all(-1)
        assert inside.sum() > 10
        torch.testing.assert_close(pts[inside].double(), op_xy[inside], atol=1e-4, rtol=0)
        if cls is ModulatedDeformConv2d:
            torch.testing.assert_close(m[inside].double(), mask[inside], atol=1e-5, rtol=0)
            assert not torch.allclose(m, torch.full_like(m, 0.5))
        else:
            assert torch.equal(m, torch.ones_like(m))
        # The composition of a one-layer chain is the same set of points, in image pixels
        # (here the image is the conv's input: stride 1).
        composed = compose_sampling_points([rec], units * stride, group=g)
        torch.testing.assert_close(composed.points[0][inside].double(), op_xy[inside],
                                   atol=1e-4, rtol=0)
        torch.testing.assert_close(composed.units, units * stride)
        checked += int(inside.sum())
    assert checked > 20


def _record(name, offset, *, stride=1, padding=1, dilation=1, input_stride=1, mask=None,
            in_hw=None):
    ho, wo = offset.shape[2:]
    return DeformLayerRecord(name=name, kernel_size=(3, 3), stride=(stride, stride),
                             padding=(padding, padding), dilation=(dilation, dilation),
                             offset_groups=offset.shape[1] // 18,
                             input_hw=in_hw or (ho * stride, wo * stride), offset=offset,
                             mask=mask, input_stride=input_stride)


def _grid(d):
    """(9, 2) x, y of the taps of a 3x3 kernel with dilation d, centred on 0."""
    return torch.tensor([[(k % 3 - 1) * d, (k // 3 - 1) * d] for k in range(9)],
                        dtype=torch.float32)


def test_two_layers_with_zero_lower_offsets_give_the_minkowski_sum():
    torch.manual_seed(1)
    lower = _record("res5.0.conv2", torch.zeros(1, 18, 6, 7), padding=1, dilation=1,
                    input_stride=16)
    # Upper layer: dilation 2, random offsets that differ per location.
    top_off = torch.randn(1, 18, 6, 7) * 0.8
    upper = _record("res5.1.conv2", top_off, padding=2, dilation=2, input_stride=16)
    c = compose_sampling_points([lower, upper], [[3 * 16, 2 * 16]])
    assert c.layers == ["res5.1.conv2", "res5.0.conv2"]
    assert [p.shape for p in c.points] == [(1, 9, 2), (1, 81, 2)]
    unit = torch.tensor([3.0, 2.0])  # (x, y) in the stride-16 map
    dyx = top_off[0, :, 2, 3].view(9, 2)
    top = unit + _grid(2) + dyx.flip(-1)  # offsets are stored (dy, dx)
    torch.testing.assert_close(c.points[0][0], top * 16)
    expected = (top[:, None, :] + _grid(1)[None]).reshape(81, 2) * 16
    torch.testing.assert_close(c.points[1][0], expected)
    # Zero offsets in both: the plain grids' sum, 81 points ({-2, 0, 2} + {-1, 0, 1} per axis
    # covers -3..3: 49 distinct positions).
    upper0 = _record("res5.1.conv2", torch.zeros(1, 18, 6, 7), padding=2, dilation=2,
                     input_stride=16)
    c0 = compose_sampling_points([lower, upper0], [[48, 32]])
    span = (c0.points[1][0] / 16 - unit)
    assert span.abs().max() == 3 and len({tuple(p) for p in span.tolist()}) == 49


def test_fractional_positions_read_the_lower_field_bilinearly():
    # Lower layer: tap 0's (dy, dx) set by hand around (y, x) = (1..2, 2..3); all else zero.
    low = torch.zeros(1, 18, 4, 5)
    low[0, 0, 1, 2], low[0, 0, 1, 3], low[0, 0, 2, 2], low[0, 0, 2, 3] = 1.0, 2.0, 3.0, 5.0  # dy
    low[0, 1, 1, 2], low[0, 1, 1, 3], low[0, 1, 2, 2], low[0, 1, 2, 3] = -1.0, 0.0, 1.0, 4.0  # dx
    mask = torch.full((1, 9, 4, 5), 0.5)
    mask[0, 0, 1, 2], mask[0, 0, 1, 3], mask[0, 0, 2, 2], mask[0, 0, 2, 3] = 0.2, 0.4, 0.6, 1.0
    lower = _record("a", low, mask=mask)
    # Upper layer: every tap moved by (dy, dx) = (0.25, 0.5), so its centre tap (k=4) of unit
    # (x, y) = (2, 1) lands on (2.5, 1.25) of the lower map.
    up = torch.zeros(1, 18, 4, 5)
    up[0, 0::2], up[0, 1::2] = 0.25, 0.5
    upper = _record("b", up, mask=torch.full((1, 9, 4, 5), 0.8))
    c = compose_sampling_points([lower, upper], [[2.0, 1.0]])
    torch.testing.assert_close(c.points[0][0, 4], torch.tensor([2.5, 1.25]))
    # Bilinear weights at (y, x) = (1.25, 2.5): (1,2) .375, (1,3) .375, (2,2) .125, (2,3) .125.
    dy = 0.375 * 1 + 0.375 * 2 + 0.125 * 3 + 0.125 * 5  # 2.125
    dx = 0.375 * -1 + 0.375 * 0 + 0.125 * 1 + 0.125 * 4  # 0.25
    m = 0.375 * 0.2 + 0.375 * 0.4 + 0.125 * 0.6 + 0.125 * 1.0  # 0.425
    # Lower tap 0 (u, v) = (0, 0), stride 1, pad 1, dilation 1:
    # (x, y) = (2.5 - 1 + dx, 1.25 - 1 + dy).
    point = c.points[1][0, 4 * 9 + 0]
    torch.testing.assert_close(point, torch.tensor([1.5 + dx, 0.25 + dy]))
    torch.testing.assert_close(c.weights[1][0, 4 * 9 + 0], torch.tensor(0.8 * m))
    # Another lower tap of the same point: its field is zero, mask 0.5 everywhere.
    torch.testing.assert_close(c.points[1][0, 4 * 9 + 8], torch.tensor([3.5, 2.25]))
    torch.testing.assert_close(c.weights[1][0, 4 * 9 + 8], torch.tensor(0.8 * 0.5))


def test_bilinear_sample_by_hand_and_clamped_outside():
    field = torch.tensor([[[0.0, 10.0], [20.0, 30.0]], [[1.0, 1.0], [1.0, 1.0]]])
    got = bilinear_sample(field, torch.tensor([0.5, 0.0, 3.0]), torch.tensor([0.25, 1.0, -2.0]))
    # (y, x) = (0.5, 0.25): 0.5*(0.75*0 + 0.25*10) + 0.5*(0.75*20 + 0.25*30) = 12.5
    torch.testing.assert_close(got[:, 0], torch.tensor([12.5, 10.0, 20.0]))
    torch.testing.assert_close(got[:, 1], torch.ones(3))


def test_a_stride_change_between_layers_goes_through_image_pixels():
    # res4's last conv (output stride 16) below res5's first (input stride 32, no dilation).
    lower = _record("res4.1.conv2", torch.zeros(1, 18, 8, 8), input_stride=16)
    upper = _record("res5.0.conv2", torch.zeros(1, 18, 4, 4), input_stride=32)
    c = compose_sampling_points([lower, upper], [[64.0, 32.0]])  # unit (x, y) = (2, 1) of res5
    top = torch.tensor([2.0, 1.0]) + _grid(1)  # res5 input map = stride 32
    torch.testing.assert_close(c.points[0][0], top * 32)
    expected = (top[:, None] * 2 + _grid(1)[None]).reshape(81, 2) * 16
    torch.testing.assert_close(c.points[1][0], expected)


def test_units_snap_to_the_nearest_top_unit_and_groups_can_be_averaged():
    off = torch.zeros(1, 36, 3, 4)  # 2 offset groups
    off[0, :18] = 1.0  # group 0: every tap moved by (1, 1)
    off[0, 18:] = -1.0  # group 1: by (-1, -1)
    rec = _record("r", off, input_stride=8)
    c0 = compose_sampling_points([rec], [[13.0, 100.0]], group=0)  # x 13/8 -> 2, y clamped to 2
    torch.testing.assert_close(c0.units, torch.tensor([[16.0, 16.0]]))
    torch.testing.assert_close(c0.points[0][0], (torch.tensor([2.0, 2.0]) + _grid(1) + 1) * 8)
    cm = compose_sampling_points([rec], [[13.0, 100.0]], group="mean")
    torch.testing.assert_close(cm.points[0][0], (torch.tensor([2.0, 2.0]) + _grid(1)) * 8)
    with pytest.raises(ValueError, match="group"):
        compose_sampling_points([rec], [[0.0, 0.0]], group=2)


def test_chain_selection():
    recs = [_record(n, torch.zeros(1, 18, 2, 2)) for n in
            ("res4.0.conv2", "res4.1.conv2", "res5.0.conv2", "res5.1.conv2", "res5.2.conv2")]
    names = lambda rs: [r.name for r in rs]  # noqa: E731
    assert names(select_chain(recs)) == ["res5.0.conv2", "res5.1.conv2", "res5.2.conv2"]
    assert len(select_chain(recs, "all")) == 5
    assert names(select_chain(recs, ["res5.0.conv2", "res4.1.conv2"])) == ["res4.1.conv2",
                                                                             "res5.0.conv2"]
    with pytest.raises(ValueError, match="contiguous"):
        select_chain(recs, ["res4.1.conv2", "res5.1.conv2"])
    with pytest.raises(ValueError, match="res6"):
        select_chain(recs, ["res6.0.conv2"])
    with pytest.raises(ValueError, match="max_points"):
        compose_sampling_points(recs, [[0.0, 0.0]], max_points=9 ** 4)
    three = compose_sampling_points(select_chain(recs), [[0.0, 0.0]])
    assert [p.shape[1] for p in three.points] == [9, 81, 729]


def test_capture_names_strides_and_shapes_in_a_resnet():
    from dcn_det.modeling.backbone import ResNet
    for dilation, res5_stride in ((2, 16), (1, 32)):
        net = ResNet(depth=18, width_mult=0.125, norm="bn", freeze_at=0, res5_dilation=dilation,
                     deform_stages=["res4", "res5"], deform_offset_groups=2).eval()
        with OffsetCapture(net) as cap, torch.no_grad():
            net(torch.randn(1, 3, 64, 96))
        recs = cap.ordered_records()
        assert [r.name for r in recs] == ["res4.0.conv2", "res4.1.conv2", "res5.0.conv2",
                                          "res5.1.conv2"]
        assert [r.input_stride for r in recs] == [16, 16, res5_stride, res5_stride]
        assert [r.output_stride for r in recs] == [16, 16, res5_stride, res5_stride]
        assert recs[2].dilation == (dilation, dilation)
        assert recs[3].offset.shape == (1, 2 * 2 * 9, 64 // res5_stride, 96 // res5_stride)
        assert recs[0].mask is None
    with pytest.raises(ValueError, match="no deformable"):
        OffsetCapture(nn.Conv2d(3, 3, 3))
