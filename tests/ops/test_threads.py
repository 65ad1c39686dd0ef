"""The CPU kernels give the same results with 2 intra-op threads as with 1.

The rest of the suite runs with one thread (tests/conftest.py), so this file is what runs the
kernels' at::parallel_for paths with several tasks in flight. Shapes are chosen so that every
kernel splits its work into several tasks (channels, offset groups, RoIs, position chunks).
"""
import pytest
import torch

from dcn_det.ops import (batched_nms, deform_conv2d, deform_max_pool2d, deform_psroi_pool, nms,
                         roi_align)

F64 = torch.float64


def _with_threads(n, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def _same_with_two_threads(fn):
    """fn() -> tuple of tensors; equal (float64 round-off aside: GEMMs may split sums
    differently) with 2 threads and with 1."""
    one = _with_threads(1, fn)
    two = _with_threads(2, fn)
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def _grads(out, leaves):
    return (out, *torch.autograd.grad(out, leaves, torch.ones_like(out)))


@pytest.mark.parametrize("use_mask", [True, False])
def test_deform_conv2d(use_mask):
    x = torch.randn(2, 32, 20, 24, dtype=F64, requires_grad=True)
    weight = torch.randn(16, 16, 3, 3, dtype=F64, requires_grad=True)
    offset = (torch.randn(2, 2 * 4 * 9, 20, 24, dtype=F64) * 2).requires_grad_()
    mask = torch.rand(2, 4 * 9, 20, 24, dtype=F64, requires_grad=True) if use_mask else None
    leaves = [x, weight, offset] + ([mask] if use_mask else [])

    def run():
        return _grads(deform_conv2d(x, offset, weight, padding=1, mask=mask), leaves)

    _same_with_two_threads(run)


@pytest.mark.parametrize("og", [1, 4])
def test_deform_max_pool2d(og):
    x = torch.randn(2, 16, 40, 44, dtype=F64, requires_grad=True)
    offset = (torch.randn(2, 2 * og * 9, 20, 22, dtype=F64) * 2).requires_grad_()
    _same_with_two_threads(lambda: _grads(deform_max_pool2d(x, offset, 3, 2, 1), [x, offset]))


@pytest.mark.parametrize("classes", [1, 4])  # shared taps (2+ channels per class) or not
def test_deform_psroi_pool(classes):
    x = torch.randn(2, 4 * 9, 12, 14, dtype=F64, requires_grad=True)
    xy = torch.rand(24, 2, dtype=F64) * 100
    rois = torch.cat([torch.randint(0, 2, (24, 1)).to(F64), xy,
                      xy + 20 + torch.rand(24, 2, dtype=F64) * 80], dim=1)
    offset = torch.randn(24, 2 * classes, 3, 3, dtype=F64, requires_grad=True)

    def run():
        out = deform_psroi_pool(x, rois, offset, spatial_scale=1 / 8, output_dim=4, group_size=3,
                                pooled_size=3, part_size=3, sample_per_part=2, trans_std=0.1)
        return _grads(out, [x, offset])

    _same_with_two_threads(run)


def test_roi_align():
    x = torch.randn(2, 24, 16, 18, dtype=F64, requires_grad=True)
    xy = torch.rand(30, 2, dtype=F64) * 200
    rois = torch.cat([torch.randint(0, 2, (30, 1)).to(F64), xy,
                      xy + 10 + torch.rand(30, 2, dtype=F64) * 100], dim=1)
    _same_with_two_threads(lambda: _grads(roi_align(x, rois, (7, 7), 1 / 16, 2, True), [x]))


def test_nms_and_batched_nms():
    xy = torch.rand(3000, 2) * 500
    boxes = torch.cat([xy, xy + 20 + torch.rand(3000, 2) * 100], dim=1)
    scores = torch.rand(3000)
    idxs = torch.randint(0, 30, (3000,))
    _same_with_two_threads(lambda: (nms(boxes, scores, 0.5),
                                    batched_nms(boxes, scores, idxs, 0.5)))
