"""Box helpers (structures.py) and the coder, matcher and sampler (modeling/box_utils.py)."""
import math

import pytest
import torch

from dcn_det.modeling.box_utils import BalancedSampler, BoxCoder, Matcher
from dcn_det.structures import (ImageList, box_area, box_iou, boxes_to_rois, clip_boxes,
                                nonempty_boxes)


def test_box_area_and_iou_by_hand():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 25.0]])
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    assert box_area(a).tolist() == [100.0, 200.0]
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    # a0/b1 overlap 5x10 = 50, union 150; a1/b0 overlap 5x5 = 25, union 275;
    # a1/b1 overlap 10x5 = 50, union 250.
    expected = torch.tensor([[1.0, 50 / 150, 0.0], [25 / 275, 50 / 250, 0.0]])
    torch.testing.assert_close(iou, expected)


def test_iou_of_degenerate_boxes_is_zero_not_nan():
    a = torch.tensor([[3.0, 3.0, 3.0, 8.0], [5.0, 5.0, 4.0, 4.0]])  # zero width, inverted
    iou = box_iou(a, torch.cat((a, torch.tensor([[0.0, 0.0, 10.0, 10.0]]))))
    assert torch.isfinite(iou).all() and (iou == 0).all()
    assert box_area(a).tolist() == [0.0, 0.0]
    assert box_iou(a[:0], a).shape == (0, 2)


def test_clip_nonempty_and_rois():
    boxes = torch.tensor([[-5.0, -2.0, 30.0, 12.0], [25.0, 1.0, 40.0, 3.0]])
    clipped = clip_boxes(boxes, (10, 20))  # (h, w)
    assert clipped.tolist() == [[0.0, 0.0, 20.0, 10.0], [20.0, 1.0, 20.0, 3.0]]
    assert nonempty_boxes(clipped).tolist() == [True, False]
    assert nonempty_boxes(clipped, min_size=9.5).tolist() == [True, False]
    assert nonempty_boxes(clipped, min_size=10.0).tolist() == [False, False]
    rois = boxes_to_rois([boxes, boxes[:1], boxes[:0]])
    assert rois.shape == (3, 5)
    assert rois[:, 0].tolist() == [0.0, 0.0, 1.0]
    torch.testing.assert_close(rois[2, 1:], boxes[0])


def test_image_list_pads_bottom_right_to_divisibility():
    a = torch.ones(3, 20, 35)
    b = torch.full((3, 33, 10), 2.0)
    batch = ImageList.from_tensors([a, b], size_divisibility=16)
    assert batch.tensor.shape == (2, 3, 48, 48)
    assert batch.image_sizes == [(20, 35), (33, 10)]
    assert (batch.tensor[0, :, :20, :35] == 1).all() and batch.tensor[0, :, 20:].abs().sum() == 0
    assert (batch.tensor[1, :, :33, :10] == 2).all() and batch.tensor[1, :, :, 10:].abs().sum() == 0
    with pytest.raises(ValueError, match="size_divisibility"):
        ImageList.from_tensors([a], size_divisibility=0)
    with pytest.raises(ValueError, match="non-empty"):
        ImageList.from_tensors([])


def test_box_coder_encode_by_hand_and_round_trip():
    coder = BoxCoder((0.1, 0.1, 0.2, 0.2))
    ref = torch.tensor([[0.0, 0.0, 10.0, 20.0]], dtype=torch.float64)
    gt = torch.tensor([[2.0, 4.0, 22.0, 24.0]], dtype=torch.float64)
    d = coder.encode(gt, ref)
    # Centres (5, 10) -> (12, 14), sizes (10, 20) -> (20, 20).
    expected = [[7 / 10 / 0.1, 4 / 20 / 0.1, math.log(2.0) / 0.2, 0.0]]
    torch.testing.assert_close(d, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(coder.decode(d, ref), gt)

    g = torch.Generator().manual_seed(1)
    xy = torch.rand(50, 2, generator=g, dtype=torch.float64) * 100
    ref = torch.cat((xy, xy + 1 + torch.rand(50, 2, generator=g, dtype=torch.float64) * 50), 1)
    xy2 = torch.rand(50, 2, generator=g, dtype=torch.float64) * 100
    gt = torch.cat((xy2, xy2 + 1 + torch.rand(50, 2, generator=g, dtype=torch.float64) * 50), 1)
    torch.testing.assert_close(coder.decode(coder.encode(gt, ref), ref), gt)


def test_box_coder_decode_per_class_and_clamp():
    coder = BoxCoder((0.1, 0.1, 0.2, 0.2))
    ref = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    deltas = torch.zeros(1, 3, 4)
    deltas[0, 1, 0] = 1.0  # dx = 0.1 widths
    deltas[0, 2, 2:] = 100.0  # far beyond the clamp
    out = coder.decode(deltas, ref)
    assert out.shape == (1, 3, 4)
    torch.testing.assert_close(out[0, 0], ref[0])
    torch.testing.assert_close(out[0, 1], torch.tensor([1.6, 0.0, 17.6, 16.0]))
    # exp(log(1000/16)) * 16 = 1000 px, centred on the reference.
    torch.testing.assert_close(out[0, 2], torch.tensor([8 - 500.0, 8 - 500.0, 8 + 500.0, 8 + 500.0]))
    with pytest.raises(ValueError, match="stds"):
        BoxCoder((0.1, 0.1, 0.0, 0.2))


def test_matcher_thresholds_and_ignore_band():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    # IoU with gt: 1.0, 0.6 (60/100), 0.4 (40/100), 0.05 (5/100), 0.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 6.0], [0.0, 0.0, 4.0, 10.0],
                          [0.0, 0.0, 0.5, 10.0], [50.0, 50.0, 60.0, 60.0]])
    m = Matcher(fg_iou=0.5, bg_iou=0.5, bg_iou_lo=0.1)
    idx, labels, max_iou = m(gt, boxes)
    torch.testing.assert_close(max_iou, torch.tensor([1.0, 0.6, 0.4, 0.05, 0.0]))
    assert labels.tolist() == [1, 1, 0, -1, -1]
    assert idx.tolist() == [0] * 5
    m = Matcher(fg_iou=0.7, bg_iou=0.3)  # the RPN's band: [0.3, 0.7) ignored
    assert m(gt, boxes)[1].tolist() == [1, -1, -1, 0, 0]
    with pytest.raises(ValueError, match="bg_iou"):
        Matcher(fg_iou=0.3, bg_iou=0.7)


def test_matcher_low_quality_matches_ties_and_zero_iou_gt():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0], [100.0, 100.0, 110.0, 110.0]])
    # Boxes 0 and 1 tie as gt0's best (IoU 0.5); box 2 is gt1's best (IoU 0.4); gt2 overlaps
    # nothing and must not turn the non-overlapping box 3 into a positive.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 5.0], [0.0, 5.0, 10.0, 10.0], [20.0, 0.0, 24.0, 10.0],
                          [60.0, 60.0, 70.0, 70.0]])
    idx, labels, _ = Matcher(0.7, 0.3, allow_low_quality_matches=True)(gt, boxes)
    assert labels.tolist() == [1, 1, 1, 0]
    assert idx[:3].tolist() == [0, 0, 1]
    assert Matcher(0.7, 0.3)(gt, boxes)[1].tolist() == [-1, -1, -1, 0]


def test_matcher_empty_gt_and_empty_boxes():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 2.0, 2.0]])
    idx, labels, max_iou = Matcher(0.5, 0.5)(boxes[:0], boxes)
    assert labels.tolist() == [0, 0] and idx.tolist() == [0, 0] and max_iou.tolist() == [0.0, 0.0]
    # IoU 0 is below bg_iou_lo = 0.1, so nothing is even background.
    assert Matcher(0.5, 0.5, bg_iou_lo=0.1)(boxes[:0], boxes)[1].tolist() == [-1, -1]
    idx, labels, _ = Matcher(0.7, 0.3, allow_low_quality_matches=True)(boxes, boxes[:0])
    assert idx.shape == (0,) and labels.shape == (0,)


def test_balanced_sampler_counts_and_membership():
    labels = torch.tensor([1] * 50 + [0] * 500 + [-1] * 100, dtype=torch.int8)
    sampler = BalancedSampler(128, 0.25)
    pos, neg = sampler(labels)
    assert pos.numel() == 32 and neg.numel() == 96
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    assert pos.unique().numel() == 32 and neg.unique().numel() == 96
    # Few positives: the batch is filled with negatives.
    labels = torch.tensor([1] * 5 + [0] * 500, dtype=torch.int8)
    pos, neg = sampler(labels)
    assert pos.numel() == 5 and neg.numel() == 123
    # Too few of both: everything is used, no repetition.
    labels = torch.tensor([1] * 3 + [0] * 7 + [-1] * 4, dtype=torch.int8)
    pos, neg = sampler(labels)
    assert sorted(pos.tolist()) == [0, 1, 2] and sorted(neg.tolist()) == list(range(3, 10))
    # Sampling is random: two draws differ.
    labels = torch.zeros(1000, dtype=torch.int8)
    assert not torch.equal(sampler(labels)[1], sampler(labels)[1])
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedSampler(128, 1.5)
