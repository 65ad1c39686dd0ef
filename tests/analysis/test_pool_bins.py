"""Deformable (PS-)RoI pooling bins: the regular grid, hand-set offsets through the real heads,
and the operator itself as the oracle of the bins' geometry."""
import pytest
import torch

from dcn_det.analysis import deformable_pool_bins, pool_bin_rects
from dcn_det.modeling.heads import FastRCNNHead, RFCNHead
from dcn_det.ops import deform_psroi_pool

BOXES = torch.tensor([[10.4, 20.6, 73.2, 60.5], [100.0, 30.0, 140.0, 131.0],
                      [40.0, 80.0, 90.0, 140.0]])
# The operator's view of each RoI: corners C-rounded, x2/y2 + 1 (inclusive pixels):
# [10, 21, 74, 62], [100, 30, 141, 132], [40, 80, 91, 141].
OP_ROIS = torch.tensor([[10.0, 21.0, 74.0, 62.0], [100.0, 30.0, 141.0, 132.0],
                        [40.0, 80.0, 91.0, 141.0]])


def _regular_grid(rois, p):
    """(R, P, P, 4) XYXY bins tiling each RoI."""
    out = torch.zeros(len(rois), p, p, 4)
    for r, (x1, y1, x2, y2) in enumerate(rois.tolist()):
        bw, bh = (x2 - x1) / p, (y2 - y1) / p
        for ph in range(p):
            for pw in range(p):
                out[r, ph, pw] = torch.tensor([x1 + pw * bw, y1 + ph * bh,
                                               x1 + (pw + 1) * bw, y1 + (ph + 1) * bh])
    return out


def test_zero_offsets_tile_the_roi():
    bins = pool_bin_rects(BOXES, torch.zeros(3, 2, 3, 3), spatial_scale=1 / 16, pooled_size=3)
    torch.testing.assert_close(bins.regular, _regular_grid(OP_ROIS, 3))
    torch.testing.assert_close(bins.shifted, bins.regular)
    assert bins.shift.abs().max() == 0
    # A part grid coarser than the bins (part 2 for P 4) still gives the regular grid.
    bins = pool_bin_rects(BOXES, None, spatial_scale=1 / 8, pooled_size=4, part_size=2)
    torch.testing.assert_close(bins.regular, _regular_grid(OP_ROIS, 4))


def _rfcn_head(deformable=True):
    torch.manual_seed(0)
    return RFCNHead(in_channels=8, num_classes=3, conv_channels=16, deformable=deformable,
                    group_size=3, pooled_size=3, sample_per_part=2, trans_std=0.1,
                    spatial_scale=1 / 16).eval()


def test_rfcn_bins_move_by_offset_times_trans_std_times_roi_size_of_the_class():
    head = _rfcn_head()
    g, c_off = 3, 4  # 3x3 position-sensitive grid; K+1 = 4 offset fields (background last)
    vals = torch.tensor([[0.5, -0.3], [-1.0, 0.2], [0.1, 0.7], [2.0, 2.0]])  # (class, x/y)
    with torch.no_grad():
        # Constant offset maps: field o (2*class + x/y) is read from channels (o*G + gh)*G + gw.
        head.cls_offset.weight.zero_()
        head.cls_offset.bias.copy_(vals.reshape(2 * c_off, 1).expand(2 * c_off, g * g)
                                             .reshape(-1))
    feature = torch.randn(1, 8, 10, 12)
    labels = torch.tensor([1, 0, 2])
    bins = deformable_pool_bins(head, feature, BOXES, labels)
    roi_wh = OP_ROIS[:, 2:] - OP_ROIS[:, :2]
    expected = vals[labels] * 0.1 * roi_wh  # (R, 2) image pixels
    torch.testing.assert_close(bins.shift, expected[:, None, None].expand(3, 3, 3, 2))
    moved = bins.regular + torch.cat((expected, expected), 1)[:, None, None]
    torch.testing.assert_close(bins.shifted, moved)
    # The box branch has its own (here zero) field.
    box_bins = deformable_pool_bins(head, feature, BOXES, branch="bbox")
    torch.testing.assert_close(box_bins.shifted, box_bins.regular)
    with pytest.raises(ValueError, match="labels"):
        deformable_pool_bins(head, feature, BOXES)
    with pytest.raises(ValueError, match="no deformable"):
        deformable_pool_bins(_rfcn_head(deformable=False), feature, BOXES, labels)


def test_faster_rcnn_bins_move_per_part_by_the_fc_offsets():
    torch.manual_seed(0)
    head = FastRCNNHead(in_channels=8, num_classes=3, conv_channels=16, pooler="deformable",
                        pooled_size=3, sample_per_part=2, fc_dim=16, trans_std=0.1,
                        spatial_scale=1 / 16).eval()
    field = torch.arange(18, dtype=torch.float32).view(2, 3, 3) / 10 - 0.8  # x then y, per bin
    with torch.no_grad():
        head.offset_fc.weight.zero_()
        head.offset_fc.bias.copy_(field.reshape(-1))
    bins = deformable_pool_bins(head, torch.randn(1, 8, 10, 12), BOXES, torch.tensor([0, 1, 2]))
    roi_wh = OP_ROIS[:, 2:] - OP_ROIS[:, :2]
    expected = field.permute(1, 2, 0)[None] * 0.1 * roi_wh[:, None, None]  # (R, P, P, 2)
    torch.testing.assert_close(bins.shift, expected)
    torch.testing.assert_close(bins.shifted[..., :2], bins.regular[..., :2] + expected)


def test_bins_are_where_the_operator_samples():
    # On a map whose value is its own x (or y) coordinate, each pooled bin is the mean of its
    # S sample positions x' = wstart + i*bin_w/S, i.e. wstart + (S-1)/2 * bin_w/S in the
    # operator's feature frame; the returned rectangles must reproduce that.
    torch.manual_seed(3)
    p, samples, scale = 3, 4, 1 / 4
    h, w = 24, 26
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing="ij")
    boxes = torch.tensor([[20.0, 22.0, 60.0, 61.0], [33.3, 30.0, 70.6, 72.0]])
    rois = torch.cat((torch.zeros(2, 1), boxes), 1).double()
    offset = torch.randn(2, 2, p, p, dtype=torch.float64) * 0.5
    bins = pool_bin_rects(boxes, offset.float(), spatial_scale=scale, pooled_size=p,
                          trans_std=0.1)
    for coord, ramp in ((0, xx), (1, yy)):
        pooled = deform_psroi_pool(ramp[None, None], rois, offset, scale, 1, 1, p, p, samples,
                                   0.1)[:, 0]
        start = bins.shifted[..., coord].double() * scale - 0.5
        size = (bins.shifted[..., coord + 2] - bins.shifted[..., coord]).double() * scale
        torch.testing.assert_close(pooled, start + (samples - 1) / 2 * size / samples,
                                   atol=2e-5, rtol=0)
