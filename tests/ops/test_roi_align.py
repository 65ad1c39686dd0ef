"""RoIAlign: the CPU kernel against the pure-PyTorch reference, autograd, compile and errors."""
import pytest
import torch

from dcn_det.ops import RoIAlign, roi_align
from dcn_det.ops.reference import roi_align_ref


def _random_rois(num, batch, height, width, scale, dtype=torch.float64):
    """(num, 5) rois in image pixels: some partly outside, some tiny, batch indices < batch."""
    img_h, img_w = height / scale, width / scale
    size = torch.tensor([img_w, img_h], dtype=dtype)
    xy = (torch.rand(num, 2, dtype=dtype) * 1.4 - 0.2) * size
    wh = torch.rand(num, 2, dtype=dtype) * size * 0.7
    wh[: num // 4] *= 0.01  # tiny boxes, well under one feature pixel
    idx = torch.randint(0, batch, (num, 1)).to(dtype)
    return torch.cat([idx, xy, xy + wh], dim=1)


CONFIGS = [  # (aligned, sampling_ratio, spatial_scale, output_size)
    (aligned, ratio, scale, size)
    for aligned in (False, True)
    for ratio in (-1, 1, 2)
    for scale, size in ((1.0, (3, 4)), (0.25, 2))
]


@pytest.mark.parametrize("aligned,ratio,scale,size", CONFIGS)
def test_forward_matches_reference(aligned, ratio, scale, size):
    x = torch.randn(3, 4, 9, 11, dtype=torch.float64)
    rois = _random_rois(24, 3, 9, 11, scale)
    out = roi_align(x, rois, size, scale, ratio, aligned)
    ref = roi_align_ref(x, rois, size, scale, ratio, aligned)
    assert out.shape == ref.shape == (24, 4, *((size, size) if isinstance(size, int) else size))
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("aligned", [False, True])
def test_boxes_wholly_outside_and_degenerate(aligned):
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    rois = torch.tensor([
        [0, -50.0, -50.0, -20.0, -20.0],   # far above-left
        [0, 30.0, 1.0, 40.0, 5.0],          # far right
        [0, 2.0, 2.0, 2.0, 2.0],            # zero size
        [0, 4.0, 4.0, 1.0, 1.0],            # inverted (x2 < x1)
        [0, -1.2, -1.2, 7.9, 6.9],          # covers all, edges outside
    ], dtype=torch.float64)
    for ratio in (-1, 2):
        out = roi_align(x, rois, 3, 1.0, ratio, aligned)
        torch.testing.assert_close(out, roi_align_ref(x, rois, 3, 1.0, ratio, aligned),
                                   rtol=1e-12, atol=1e-12)
        assert out[0].abs().max() == 0 and out[1].abs().max() == 0


def test_one_pixel_bin_recovers_input():
    # aligned boxes of exactly one pixel around pixel centres, 1 sample: the pixel itself.
    x = torch.randn(1, 3, 5, 6, dtype=torch.float64)
    rois = torch.tensor([[0, 2.0, 1.0, 3.0, 2.0], [0, 0.0, 0.0, 6.0, 5.0]], dtype=torch.float64)
    out = roi_align(x, rois, (1, 1), 1.0, 1, aligned=True)
    torch.testing.assert_close(out[0, :, 0, 0], x[0, :, 1, 2])
    full = roi_align(x, rois[1:], (5, 6), 1.0, 1, aligned=True)
    torch.testing.assert_close(full[0], x[0])


def test_zero_rois_and_zero_batch():
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    out = roi_align(x, torch.zeros(0, 5, dtype=torch.float64), (2, 2), 1.0, 2)
    assert out.shape == (0, 3, 2, 2)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    empty = torch.randn(0, 3, 5, 5)
    assert roi_align(empty, torch.zeros(0, 5), 2).shape == (0, 3, 2, 2)


def test_list_of_boxes_equals_rois_tensor():
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    per_image = [torch.tensor([[1.0, 1.0, 5.0, 6.0], [0.0, 2.0, 3.0, 7.5]], dtype=torch.float64),
                 torch.zeros(0, 4, dtype=torch.float64),
                 torch.tensor([[2.0, 2.0, 7.0, 4.0]], dtype=torch.float64)]
    rois = torch.tensor([[0, 1.0, 1.0, 5.0, 6.0], [0, 0.0, 2.0, 3.0, 7.5], [2, 2.0, 2.0, 7.0, 4.0]],
                        dtype=torch.float64)
    torch.testing.assert_close(roi_align(x, per_image, 2, 0.5, 2, True),
                               roi_align(x, rois, 2, 0.5, 2, True), rtol=0, atol=0)


@pytest.mark.parametrize("aligned,ratio", [(False, -1), (True, 2), (True, -1)])
def test_gradient_matches_reference_autograd(aligned, ratio):
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(12, 2, 7, 9, 0.5)
    grad_out = torch.randn(12, 3, 3, 2, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad(roi_align(x, rois, (3, 2), 0.5, ratio, aligned), x, grad_out)
    (g_ref,) = torch.autograd.grad(roi_align_ref(x, rois, (3, 2), 0.5, ratio, aligned), x,
                                   grad_out)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-12)


def _integer_sample_rois(num, batch, height, width, pooled, aligned):
    """(num, 5) RoIs whose every sample (sampling_ratio 1, spatial_scale 1) lies exactly on an
    integer row and column, the first one drawn from -2, -1, 0, 1, H-2, H-1, H, H+1 (and likewise
    for x): the inclusive [-1, H] cut-off and the last-row clamp that random RoIs never hit."""
    ys = torch.tensor([-2, -1, 0, 1, height - 2, height - 1, height, height + 1])
    xs = torch.tensor([-2, -1, 0, 1, width - 2, width - 1, width, width + 1])
    ty = ys[torch.randint(0, 8, (num,))].double()
    tx = xs[torch.randint(0, 8, (num,))].double()
    # Bins of 1 or 2 pixels: samples at t, t + bin, ...; x1 = t - bin/2 (+0.5 when aligned).
    bin_h = torch.randint(1, 3, (num,)).double()
    bin_w = torch.randint(1, 3, (num,)).double()
    shift = 0.5 if aligned else 0.0
    y1, x1 = ty - bin_h / 2 + shift, tx - bin_w / 2 + shift
    idx = torch.randint(0, batch, (num,)).double()
    return torch.stack([idx, x1, y1, x1 + bin_w * pooled, y1 + bin_h * pooled], dim=1)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("pooled", [1, 3])
def test_samples_exactly_on_integer_and_border_positions(aligned, pooled):
    """Forward and input gradient equal the reference's when samples sit exactly at -1, 0,
    H-1 and H (inside the inclusive range) and at -2 and H+1 (outside)."""
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    rois = _integer_sample_rois(40, 2, 5, 6, pooled, aligned)
    out = roi_align(x, rois, pooled, 1.0, 1, aligned)
    ref = roi_align_ref(x, rois, pooled, 1.0, 1, aligned)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(ref)
    (g_ours,) = torch.autograd.grad(out, x, grad_out)
    (g_ref,) = torch.autograd.grad(ref, x, grad_out)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-12)
    # A single sample at exactly (-1, -1) reads pixel (0, 0) in full; at (-1, W) pixel (0, W-1);
    # just outside either, nothing.
    one = torch.tensor([[0, -2.0, -2.0, 0.0, 0.0], [0, 5.0, -2.0, 7.0, 0.0],
                        [0, -2.5, -2.0, -0.5, 0.0]], dtype=torch.float64)
    if aligned:
        one[:, 1:] += 0.5
    got = roi_align(x.detach(), one, 1, 1.0, 1, aligned)[:, :, 0, 0]
    torch.testing.assert_close(got[0], x[0, :, 0, 0].detach(), rtol=0, atol=0)
    torch.testing.assert_close(got[1], x[0, :, 0, 5].detach(), rtol=0, atol=0)
    assert got[2].abs().max() == 0


def test_gradcheck():
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(5, 2, 5, 6, 1.0)
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, 2, 1.0, -1, True), (x,))
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, (2, 3), 1.0, 2, False), (x,))


@pytest.mark.slow  # torch.library.opcheck: fake tensors, autograd and AOT dispatch checks
def test_opcheck():
    x = torch.randn(2, 3, 6, 7, requires_grad=True)
    rois = _random_rois(6, 2, 6, 7, 0.5, dtype=torch.float32)
    for aligned in (False, True):
        torch.library.opcheck(torch.ops.dcn_det.roi_align.default,
                              (x, rois, 0.5, 2, 3, -1, aligned))
    grad = torch.randn(6, 3, 2, 3)
    torch.library.opcheck(torch.ops.dcn_det._roi_align_backward.default,
                          (grad, rois, 0.5, 2, 3, 2, 3, 6, 7, 2, True))


@pytest.mark.slow  # torch.compile
@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_module(dynamic):
    module = RoIAlign((2, 3), spatial_scale=0.5, sampling_ratio=2, aligned=True)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True, dynamic=dynamic)
    x = torch.randn(2, 3, 6, 7, requires_grad=True)
    for num in (1, 3):  # a second RoI count: recompiles, or reuses the dynamic graph
        boxes = [torch.tensor([[1.0, 1.0, 9.0, 7.0]]), torch.tensor([[0.0, 2.0, 5.0, 11.0]] * num)]
        out = compiled(x, boxes)
        expected = module(x, boxes)
        torch.testing.assert_close(out, expected)
        (g_c,) = torch.autograd.grad(out.sum(), x)
        (g_e,) = torch.autograd.grad(expected.sum(), x)
        torch.testing.assert_close(g_c, g_e)


def test_float32_close_to_reference():
    x = torch.randn(2, 4, 8, 8)
    rois = _random_rois(10, 2, 8, 8, 1.0)
    out = roi_align(x, rois.float(), 3, 1.0, -1, True)
    torch.testing.assert_close(out.double(), roi_align_ref(x.double(), rois, 3, 1.0, -1, True),
                               rtol=1e-5, atol=1e-5)


def test_half_runs_in_float32_on_cpu():
    x = torch.randn(1, 2, 6, 6)
    rois = _random_rois(4, 1, 6, 6, 1.0, dtype=torch.float32)
    for dtype in (torch.float16, torch.bfloat16):
        out = roi_align(x.to(dtype), rois, 2, 1.0, 2, True)
        assert out.dtype == dtype
        expected = roi_align(x.to(dtype).float(), rois, 2, 1.0, 2, True)
        torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch.ops.dcn_det.roi_align(x.bfloat16(), rois.bfloat16(), 1.0, 2, 2, 2, True)
    assert out.dtype == torch.float32


def test_module_repr_and_defaults():
    m = RoIAlign(7, 1 / 16, 0)
    assert m.output_size == (7, 7) and not m.aligned
    assert "output_size=(7, 7)" in repr(m)


@pytest.mark.parametrize("call,exc,match", [
    (lambda x, r: roi_align(x[0], r, 2), ValueError, r"input must have shape \(N, C, H, W\)"),
    (lambda x, r: roi_align(x, r[:, 1:], 2), ValueError,
     r"boxes must have shape \(R, 5\).*\(3, 4\)"),
    (lambda x, r: roi_align(x, [r[:, :3]], 2), ValueError, r"boxes\[0\] must have shape \(Ri, 4\)"),
    (lambda x, r: roi_align(x, [], 2), ValueError, "boxes is an empty list"),
    (lambda x, r: roi_align(x, r.double(), 2), ValueError, "boxes has dtype torch.float64"),
    (lambda x, r: roi_align(x.long(), r, 2), ValueError, "input must be a floating-point"),
    (lambda x, r: roi_align(x, r, (0, 2)), ValueError, "output_size must be positive"),
    (lambda x, r: roi_align(x, r, (2, 2, 2)), ValueError, "output_size must be an int or a pair"),
    (lambda x, r: roi_align(x, r, 2, spatial_scale=0.0), ValueError, "spatial_scale must be > 0"),
    (lambda x, r: roi_align(x, r, 2, sampling_ratio=1.5), ValueError, "sampling_ratio must be"),
    (lambda x, r: roi_align(x, r.index_fill(1, torch.tensor([0]), 2.0), 2), RuntimeError,
     r"rois\[0, 0\] \(the batch index\) is 2 but must be an integer in \[0, 2\)"),
    (lambda x, r: roi_align(x, r.index_fill(1, torch.tensor([3]), float("nan")), 2), RuntimeError,
     r"rois\[0, 3\] is nan; every RoI value must be finite"),
])
def test_bad_inputs(call, exc, match):
    x = torch.randn(2, 3, 5, 5)
    rois = torch.tensor([[0, 0.0, 0.0, 3.0, 3.0], [1, 1.0, 1.0, 4.0, 2.0], [1, 0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(exc, match=match):
        call(x, rois)


@pytest.mark.parametrize("aligned,ratio", [(False, -1), (True, 2), (True, 0)])
def test_matches_torchvision(tv_ops, aligned, ratio):
    x = torch.randn(2, 3, 9, 10, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(16, 2, 9, 10, 0.5)
    ours = roi_align(x, rois, (3, 3), 0.5, ratio, aligned)
    theirs = tv_ops.roi_align(x, rois, (3, 3), 0.5, ratio, aligned)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(torch.autograd.grad(ours.sum(), x)[0],
                               torch.autograd.grad(theirs.sum(), x)[0])
