"""FPN anchors (detectron2's cell anchors), the RoI-to-level rule and multi-level pooling."""
import math

import pytest
import torch

from dcn_det import ops
from dcn_det.modeling.heads.multilevel_pool import MultiLevelRoIPool, assign_boxes_to_levels
from dcn_det.modeling.rpn import FPNAnchorGenerator

R2 = math.sqrt(2.0)


def test_cell_anchors_of_size_32():
    # detectron2 DefaultAnchorGenerator, size 32, ratios (0.5, 1, 2): area 1024 kept,
    # w = sqrt(1024 / r), h = r * w, centred at 0.
    got = FPNAnchorGenerator.cell_anchors(32.0, (0.5, 1.0, 2.0)).double()
    a, b = 16.0 * R2, 8.0 * R2  # 22.627417, 11.313708
    want = torch.tensor([[-a, -b, a, b], [-16.0, -16.0, 16.0, 16.0], [-b, -a, b, a]],
                        dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(got[0], torch.tensor([-22.627417, -11.313708, 22.627417,
                                                     11.313708], dtype=torch.float64),
                               rtol=0, atol=1e-5)


def test_anchors_of_every_level():
    gen = FPNAnchorGenerator((32, 64, 128, 256, 512), (4, 8, 16, 32, 64))
    feats = [torch.zeros(1, 1, h, w) for h, w in ((6, 8), (3, 4), (2, 2), (1, 1), (1, 1))]
    levels = gen.grid_anchors(feats)
    assert [tuple(a.shape) for a in levels] == [(6 * 8 * 3, 4), (3 * 4 * 3, 4), (12, 4),
                                                 (3, 4), (3, 4)]
    for size, stride, anchors in zip((32, 64, 128, 256, 512), (4, 8, 16, 32, 64), levels):
        # Ratio 1 of cell (0, 0) is a size x size square centred at the origin (offset 0).
        torch.testing.assert_close(anchors[1], torch.tensor([-size / 2, -size / 2,
                                                             size / 2, size / 2]))
        # Every anchor has area size^2 (to float32 rounding).
        wh = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
        torch.testing.assert_close(wh, torch.full_like(wh, size * size), rtol=1e-5, atol=0)
    # Position-major, ratios innermost: anchor 3 is cell (0, 1), ratio 0.5 -> shifted by 4 px.
    torch.testing.assert_close(levels[0][3], levels[0][0] + torch.tensor([4.0, 0, 4.0, 0]))
    # Row 1 starts after the 8 cells of row 0.
    torch.testing.assert_close(levels[0][8 * 3], levels[0][0] + torch.tensor([0, 4.0, 0, 4.0]))
    half = FPNAnchorGenerator((32,), (4,), offset=0.5).grid_anchors([torch.zeros(1, 1, 1, 1)])
    torch.testing.assert_close(half[0][1], torch.tensor([-14.0, -14.0, 18.0, 18.0]))


def _square(side, x0=0.0):
    return [0.0, x0, 0.0, x0 + side, side]


@pytest.mark.parametrize("side, level", [
    (224.0, 4), (223.9, 3), (112.0, 3), (111.9, 2), (448.0, 5), (447.0, 4),
    (1000.0, 5), (10.0, 2), (56.0, 2), (0.0, 2)])
def test_level_of_square_rois(side, level):
    # floor(4 + log2(side / 224 + 1e-8)) clamped to [2, 5]: 224 -> 4, 112 -> 3, 448 -> 5,
    # just below a power-of-two boundary -> the level below; tiny / empty -> 2; huge -> 5.
    rois = torch.tensor([_square(side)])
    assert assign_boxes_to_levels(rois).tolist() == [level - 2]


def test_level_uses_sqrt_of_area():
    rois = torch.tensor([[0.0, 0.0, 0.0, 112.0, 448.0],   # sqrt(112 * 448) = 224 -> P4
                         [1.0, 10.0, 10.0, 66.0, 122.0]])  # sqrt(56 * 112) = 79.2 -> P2
    assert assign_boxes_to_levels(rois).tolist() == [2, 0]
    assert assign_boxes_to_levels(rois[:, 1:]).tolist() == [2, 0]  # (R, 4) boxes too


def _features(seed=0, channels=4, n=2, sizes=((40, 48), (20, 24), (10, 12), (5, 6))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, channels, h, w, generator=g, dtype=torch.float64) for h, w in sizes]


# RoIs in scrambled level order, none on P5 (an empty level), two images.
ROIS = torch.tensor([[0.0, 10.0, 20.0, 130.0, 140.0],   # side 120 -> P3
                     [1.0, 5.0, 5.0, 40.0, 30.0],        # side 29.6 -> P2
                     [0.0, 0.0, 0.0, 190.0, 160.0],      # side 174 -> P3
                     [1.0, 2.0, 3.0, 180.0, 186.0],      # side 180.5 -> P3
                     [0.0, 8.0, 4.0, 170.0, 190.0],      # side 173.6 -> P3
                     [1.0, 0.0, 0.0, 191.0, 191.0],      # side 191 -> P3
                     [0.0, 1.0, 1.0, 15.0, 18.0]], dtype=torch.float64)  # side 15.4 -> P2


@pytest.mark.parametrize("pooler", ["roi_align", "psroi_plain", "deformable"])
def test_each_roi_is_pooled_from_its_level(pooler):
    torch.manual_seed(0)
    pool = MultiLevelRoIPool(strides=(4, 8, 16, 32), channels=4, pooler=pooler,
                             pooled_size=3, sample_per_part=2).double()
    if pooler == "deformable":
        with torch.no_grad():  # non-zero offsets, so that the per-level fc matters
            for fc in pool.offset_fcs:
                fc.weight.normal_(0.0, 0.05)
                fc.bias.normal_(0.0, 0.1)
    feats = _features()
    levels = pool.levels(ROIS).tolist()
    assert levels == [1, 0, 1, 1, 1, 1, 0]
    out = pool(feats, ROIS)
    assert out.shape == (7, 4, 3, 3) and out.dtype == torch.float64
    for i, lvl in enumerate(levels):
        roi, f, s = ROIS[i:i + 1], feats[lvl], 1.0 / (4 * 2 ** lvl)
        if pooler == "roi_align":
            want = ops.roi_align(f, roi, 3, s, 0, True)
        elif pooler == "psroi_plain":
            want = ops.deform_psroi_pool(f, roi, None, s, 4, 1, 3, 3, 2, 0.1)
        else:
            plain = ops.deform_psroi_pool(f, roi, None, s, 4, 1, 3, 3, 2, 0.1)
            off = pool.offset_fcs[lvl](plain.flatten(1)).view(-1, 2, 3, 3)
            assert float(off.detach().abs().max()) > 0
            want = ops.deform_psroi_pool(f, roi, off, s, 4, 1, 3, 3, 2, 0.1)
        torch.testing.assert_close(out[i:i + 1], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pooler", ["roi_align", "deformable"])
def test_no_rois_and_gradients(pooler):
    pool = MultiLevelRoIPool(strides=(4, 8, 16, 32), channels=4, pooler=pooler,
                             pooled_size=3).double()
    feats = [f.requires_grad_() for f in _features()]
    empty = pool(feats, torch.zeros((0, 5), dtype=torch.float64))
    assert empty.shape == (0, 4, 3, 3)
    out = pool(feats, ROIS)
    out.sum().backward()
    # P2 and P3 hold RoIs and get gradient; P4 and P5 hold none.
    assert [float(f.grad.abs().sum()) > 0 for f in feats] == [True, True, False, False]


def test_bad_inputs():
    pool = MultiLevelRoIPool(strides=(4, 8, 16, 32), channels=4)
    with pytest.raises(ValueError, match="4 levels"):
        pool(_features()[:3], ROIS)
    with pytest.raises(ValueError, match=r"features\[1\] must be \(N, 4, H, W\)"):
        pool([f.float() if i != 1 else torch.zeros(2, 3, 5, 5) for i, f in enumerate(_features())],
             ROIS.float())
    with pytest.raises(ValueError, match="pooler"):
        MultiLevelRoIPool(strides=(4, 8), channels=4, pooler="max")
