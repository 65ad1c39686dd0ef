"""Bucket of a location: the smallest containing box decides; background; threshold edges."""
import pytest
import torch

from dcn_det.analysis import BUCKETS, assign_buckets

SMALL, MEDIUM, LARGE, BG = range(4)


def _areas(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def test_smallest_containing_box_wins():
    assert BUCKETS == ("small", "medium", "large", "background")
    boxes = torch.tensor([[0.0, 0.0, 100.0, 100.0],   # 10000: large
                          [10.0, 10.0, 40.0, 40.0],   # 900: small
                          [50.0, 50.0, 90.0, 90.0]])  # 1600: medium
    points = torch.tensor([[20.0, 20.0], [60.0, 60.0], [95.0, 5.0], [150.0, 150.0],
                           [100.0, 100.0], [100.5, 50.0]])
    got = assign_buckets(points, boxes, _areas(boxes))
    assert got.tolist() == [SMALL, MEDIUM, LARGE, BG, LARGE, BG]
    # Order of the boxes does not matter.
    got = assign_buckets(points, boxes.flip(0), _areas(boxes).flip(0))
    assert got.tolist() == [SMALL, MEDIUM, LARGE, BG, LARGE, BG]


def test_threshold_edges_and_original_areas():
    # Areas exactly at the thresholds go up (COCO: small < 32^2 <= medium < 96^2 <= large).
    boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0], [0.0, 0.0, 96.0, 96.0],
                          [0.0, 0.0, 31.99, 32.0], [0.0, 0.0, 95.99, 96.0]])
    point = torch.tensor([[5.0, 5.0]])
    got = [int(assign_buckets(point, boxes[i:i + 1], _areas(boxes[i:i + 1]))) for i in range(4)]
    assert got == [MEDIUM, LARGE, SMALL, MEDIUM]
    # The bucket uses the areas given (original-image pixels), not the boxes' own size.
    assert int(assign_buckets(point, boxes[:1], torch.tensor([1023.0]))) == SMALL
    assert int(assign_buckets(point, boxes[:1], _areas(boxes[:1]),
                              area_thresholds=(2000, 5000))) == SMALL
    assert int(assign_buckets(point, boxes[:1], _areas(boxes[:1]),
                              area_thresholds=(100, 1024))) == LARGE


def test_no_boxes_is_background_and_bad_arguments():
    assert assign_buckets(torch.rand(5, 2), torch.zeros(0, 4), torch.zeros(0)).tolist() == [BG] * 5
    with pytest.raises(ValueError, match="area_thresholds"):
        assign_buckets(torch.rand(1, 2), torch.zeros(0, 4), torch.zeros(0), (96 ** 2, 32 ** 2))
    with pytest.raises(ValueError, match="areas"):
        assign_buckets(torch.rand(1, 2), torch.zeros(2, 4), torch.zeros(3))
