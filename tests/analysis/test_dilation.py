"""Effective dilation: zero offsets, a scaled grid, a hand-computed irregular grid, and the
per-bucket statistics of a batch."""
import math

import pytest
import torch

from dcn_det.analysis import (DeformLayerRecord, DilationAccumulator, OffsetCapture,
                              effective_dilation, format_dilation_table)
from dcn_det.ops import DeformConv2d


def _conv(dilation, groups=1):
    return DeformConv2d(4, 4, 3, padding=dilation, dilation=dilation, offset_groups=groups)


@pytest.mark.parametrize("dilation", [1, 2])
def test_zero_offsets_give_the_dilation(dilation):
    conv = _conv(dilation, groups=2)  # offsets are zero-initialised
    with OffsetCapture(conv) as cap, torch.no_grad():
        conv(torch.randn(2, 4, 9, 11))
    ed = effective_dilation(cap.records["conv"])
    assert ed.shape == (2, 2, 9, 11)
    torch.testing.assert_close(ed, torch.full_like(ed, float(dilation)))


@pytest.mark.parametrize("dilation,scale", [(1, 1.5), (2, 3.0), (2, 0.5)])
def test_offsets_that_scale_the_grid_scale_the_dilation(dilation, scale):
    conv = _conv(dilation)
    with torch.no_grad():
        # offset_k = (s - 1) * p_k, with p_k = ((u-1)*d, (v-1)*d) the tap's place in the grid,
        # set through the offset conv's bias (zero weights: the same at every location).
        for k in range(9):
            u, v = divmod(k, 3)
            conv.conv_offset.bias[2 * k] = (scale - 1) * (u - 1) * dilation
            conv.conv_offset.bias[2 * k + 1] = (scale - 1) * (v - 1) * dilation
    with OffsetCapture(conv) as cap, torch.no_grad():
        conv(torch.randn(1, 4, 7, 8))
    ed = effective_dilation(cap.records["conv"])
    torch.testing.assert_close(ed, torch.full_like(ed, scale * dilation))


def test_irregular_grid_by_hand():
    # Dilation 1; tap (0, 0) moved right by 1 onto tap (0, 1): of the 12 adjacent pairs, that
    # horizontal pair is 0 apart, its vertical pair with (1, 0) is sqrt(2), the other 10 are 1.
    off = torch.zeros(1, 18, 1, 1)
    off[0, 1] = 1.0  # tap 0, dx
    rec = DeformLayerRecord(name="r", kernel_size=(3, 3), stride=(1, 1), padding=(1, 1),
                            dilation=(1, 1), offset_groups=1, input_hw=(1, 1), offset=off)
    assert float(effective_dilation(rec)) == pytest.approx((10 + 0 + math.sqrt(2)) / 12)
    # Unequal dilations: 6 horizontal pairs at dil_w, 6 vertical at dil_h.
    rec2 = DeformLayerRecord(name="r", kernel_size=(3, 3), stride=(1, 1), padding=(1, 3),
                             dilation=(1, 3), offset_groups=1, input_hw=(1, 1),
                             offset=torch.zeros(1, 18, 1, 1))
    assert float(effective_dilation(rec2)) == pytest.approx((6 * 3 + 6 * 1) / 12)


def test_accumulator_buckets_mean_and_std():
    # Output map 4x4 at stride 8 of a 24x32 resized image padded to 32x32: rows 0-2 are the
    # image (12 locations), row 3 is padding. Zero offsets (dilation 1) except location
    # (i, j) = (2, 3), whose grid is scaled by 3.
    off = torch.zeros(1, 18, 4, 4)
    for k in range(9):
        u, v = divmod(k, 3)
        off[0, 2 * k, 2, 3], off[0, 2 * k + 1, 2, 3] = 2 * (u - 1), 2 * (v - 1)
    rec = DeformLayerRecord(name="res5.0.conv2", kernel_size=(3, 3), stride=(1, 1),
                            padding=(1, 1), dilation=(1, 1), offset_groups=1, input_hw=(4, 4),
                            offset=off, input_stride=8)
    # One box holds the centres (j*8 + .5, i*8 + .5) for i, j in {0, 1}; its area is 144 in
    # the resized image, 576 in the original (twice the size): small.
    target = {"boxes": torch.tensor([[0.0, 0.0, 12.0, 12.0]]), "orig_size": (48, 64)}
    acc = DilationAccumulator()
    acc.add([rec], [(24, 32)], [target])
    table = acc.table()
    assert table.layers == ["res5.0.conv2"] and table.num_images == 1
    assert table.count[0].tolist() == [4, 0, 0, 8]
    mean, std = table.mean()[0], table.std()[0]
    assert mean[0] == pytest.approx(1.0) and std[0] == pytest.approx(0.0)
    assert mean[3] == pytest.approx((7 * 1 + 3) / 8)
    assert std[3] == pytest.approx(math.sqrt((7 * 1 + 9) / 8 - (10 / 8) ** 2))
    assert math.isnan(mean[1]) and math.isnan(std[2])
    # With thresholds below 576 the same box is large.
    acc2 = DilationAccumulator(area_thresholds=(100, 500))
    acc2.add([rec], [(24, 32)], [target])
    assert acc2.table().count[0].tolist() == [0, 0, 4, 8]
    text = format_dilation_table(table)
    assert "res5.0.conv2" in text and "1.00 ± 0.00 (4)" in text and "1.25 ± 0.66 (8)" in text
    d = table.to_dict()
    assert d["stats"]["res5.0.conv2"]["medium"] == {"mean": None, "std": None, "count": 0}
    assert d["stats"]["res5.0.conv2"]["background"]["count"] == 8


def test_across_tables_mean_and_seed_spread():
    from dcn_det.analysis.dilation_table import DilationTable, across_tables

    def table(values, counts):
        count = torch.tensor([counts], dtype=torch.float64)
        total = torch.tensor([values], dtype=torch.float64) * count
        return DilationTable(["res5.0.conv2"], {"res5.0.conv2": (2, 2)}, count, total,
                             total * 0)

    tabs = [table([2.0, 3.0, 4.0, 1.0], [1, 2, 3, 4]), table([4.0, 5.0, 0.0, 1.0], [1, 2, 0, 4]),
            table([3.0, 4.0, 6.0, 1.0], [5, 5, 5, 5])]
    s = across_tables(tabs)["stats"]["res5.0.conv2"]
    assert s["small"] == {"mean": 3.0, "std": 1.0, "n": 3}
    assert s["large"]["n"] == 2 and s["large"]["mean"] == 5.0  # an empty bucket is left out
    assert s["large"]["std"] == pytest.approx(2 ** 0.5)
    assert s["background"]["std"] == 0.0
    with pytest.raises(ValueError, match="at least two"):
        across_tables(tabs[:1])
