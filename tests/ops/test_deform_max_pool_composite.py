"""The grid_sample composite that serves deform_max_pool2d on CUDA, run on the CPU here and
compared with the CPU kernel: outputs, argmax and both gradients, at the kinks too."""
import pytest
import torch
import torch.nn.functional as F

from dcn_det.ops import deform_max_pool_composite as composite
from tests.ops.test_deform_max_pool import CONFIGS, POOLS, _geometry, make_case

F64 = torch.float64


def _kernel(x, offset, geometry, grad_out):
    out, arg = torch.ops.dcn_det.deform_max_pool2d(x, offset, *geometry)
    grads = torch.ops.dcn_det._deform_max_pool2d_backward(grad_out, x, offset, arg, *geometry)
    return out, arg, grads


def _composite(x, offset, geometry, grad_out):
    out, arg = composite.forward(x, offset, *geometry)
    grads = composite.backward(grad_out, x, offset, arg, *geometry)
    return out, arg, grads


def _assert_same_as_kernel(x, offset, geometry, tol=1e-12):
    h_out, w_out = offset.shape[2:]
    grad_out = torch.randn(x.shape[0], x.shape[1], h_out, w_out, dtype=x.dtype)
    out_k, arg_k, (gx_k, goff_k) = _kernel(x, offset, geometry, grad_out)
    out_c, arg_c, (gx_c, goff_c) = _composite(x, offset, geometry, grad_out)
    assert torch.equal(arg_c, arg_k)
    torch.testing.assert_close(out_c, out_k, rtol=tol, atol=tol)
    torch.testing.assert_close(gx_c, gx_k, rtol=tol, atol=tol)
    torch.testing.assert_close(goff_c, goff_k, rtol=tol, atol=tol)
    return arg_k


def test_padded_side_is_a_power_of_two_plus_one_above_the_size():
    for size in range(1, 300):
        side = composite._padded_side(size)
        span = side - 1
        assert span >= size and span & (span - 1) == 0 and (span == 1 or span // 2 < size)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_random_offsets_match_the_kernel(name):
    case = make_case(**CONFIGS[name])
    _assert_same_as_kernel(case["input"], case["offset"], _geometry(case))


@pytest.mark.parametrize("h,w", [(1, 1), (1, 6), (2, 3), (5, 8), (8, 9), (9, 17), (16, 5)])
def test_integer_and_border_samples_match_the_kernel(h, w):
    """Samples exactly on -1, 0, H-1, H, in (-1, 0) and (H-1, H), on integer rows inside, for
    sizes on both sides of powers of two (the padded sides 2, 3, 5, 9, 17, 33)."""
    n, c = 2, 4
    h_out, w_out = h, w
    u = (torch.arange(9) // 3).view(1, 1, 9, 1, 1)
    v = (torch.arange(9) % 3).view(1, 1, 9, 1, 1)
    base_y = torch.arange(h_out).view(1, 1, 1, h_out, 1) - 1 + u
    base_x = torch.arange(w_out).view(1, 1, 1, 1, w_out) - 1 + v

    def points(size):
        return torch.tensor([-1.5, -1, -0.5, -0.25, 0, 0.5, 1, size - 2, size - 1.5, size - 1,
                             size - 0.5, size, size + 0.5, size // 2], dtype=F64)

    shape = (n, 2, 9, h_out, w_out)
    ys, xs = points(h), points(w)
    dy = ys[torch.randint(0, len(ys), shape)] - base_y
    dx = xs[torch.randint(0, len(xs), shape)] - base_x
    if h * w > 1:
        dy[:, :, :, 0, 0] = h - base_y[:, :, :, 0, 0]  # every tap of output (0, 0) on row H
    offset = torch.stack([dy, dx], dim=3).reshape(n, 36, h_out, w_out)
    x = torch.randn(n, c, h, w, dtype=F64)
    for dtype in (F64, torch.float32):
        arg = _assert_same_as_kernel(x.to(dtype), offset.to(dtype), (3, 3, 1, 1, 1, 1, 1, 1, 2),
                                     tol=1e-12 if dtype == F64 else 1e-5)
    assert (arg >= 0).any() and (h * w == 1 or (arg[:, :, 0, 0] == -1).all())


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("kernel,stride,pad,dil", POOLS)
def test_zero_offsets_equal_max_pool2d(kernel, stride, pad, dil, dtype):
    x = torch.randn(2, 3, 9, 10, dtype=dtype)
    want = F.max_pool2d(x, kernel, stride, pad, dil)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    geometry = (kh, kw, *pair(stride), *pair(pad), *pair(dil), 1)
    offset = torch.zeros(2, 2 * kh * kw, *want.shape[2:], dtype=dtype)
    out, _ = composite.forward(x, offset, *geometry)
    assert torch.equal(out, want)
    _assert_same_as_kernel(x, offset, geometry, tol=0)


def test_ties_all_skipped_and_nan_match_the_kernel():
    # Constant input with integer offsets: exact ties, first kept tap wins.
    x = torch.full((1, 2, 5, 6), 1.5, dtype=F64)
    offset = torch.randint(-2, 3, (1, 18, 5, 6)).to(F64)
    _assert_same_as_kernel(x, offset, (3, 3, 1, 1, 1, 1, 1, 1, 1), tol=0)
    # Every tap outside: 0 and -1.
    far = torch.full((1, 18, 5, 6), 40.0, dtype=F64)
    arg = _assert_same_as_kernel(torch.randn(1, 2, 5, 6, dtype=F64), far,
                                 (3, 3, 1, 1, 1, 1, 1, 1, 1))
    assert (arg == -1).all()
    # NaN offsets are skipped: no NaN reaches the outputs or the gradients.
    x = torch.randn(1, 2, 5, 6, dtype=F64)
    offset = torch.randn(1, 18, 5, 6, dtype=F64)
    offset[0, 0, 1:3] = float("nan")
    _assert_same_as_kernel(x, offset, (3, 3, 1, 1, 1, 1, 1, 1, 1))
    out_c, _, grads_c = _composite(x, offset, (3, 3, 1, 1, 1, 1, 1, 1, 1),
                                   torch.ones(1, 2, 5, 6, dtype=F64))
    assert all(torch.isfinite(t).all() for t in (out_c, *grads_c))
    # A NaN pixel wins the windows that read it, in both.
    x[0, 1, 2, 3] = float("nan")
    out_k, arg_k = torch.ops.dcn_det.deform_max_pool2d(x, offset, 3, 3, 1, 1, 1, 1, 1, 1, 1)
    out_c, arg_c = composite.forward(x, offset, 3, 3, 1, 1, 1, 1, 1, 1, 1)
    assert torch.equal(arg_c, arg_k) and torch.isnan(out_k).any()
    torch.testing.assert_close(out_c, out_k, equal_nan=True)


def test_minus_infinity_values_keep_the_first_kept_tap():
    """A window whose kept values are all -inf (the composite marks skipped taps with -inf):
    the first kept tap wins, never a skipped one."""
    x = torch.tensor([[[[float("-inf"), 1.0], [2.0, 3.0]]]], dtype=F64)
    offset = torch.zeros(1, 18, 1, 1, dtype=F64)  # 3x3, stride 2, padding 1: one output
    for k in range(9):
        u, v = divmod(k, 3)
        if k < 4:
            offset[0, 2 * k] = -5.0  # outside
        else:
            offset[0, 2 * k], offset[0, 2 * k + 1] = 1 - u, 1 - v  # onto pixel (0, 0)
    out_k, arg_k = torch.ops.dcn_det.deform_max_pool2d(x, offset, 3, 3, 2, 2, 1, 1, 1, 1, 1)
    out_c, arg_c = composite.forward(x, offset, 3, 3, 2, 2, 1, 1, 1, 1, 1)
    assert arg_k.item() == 4 and arg_c.item() == 4
    assert out_k.item() == out_c.item() == float("-inf")


def test_empty_sizes():
    for x, offset in ((torch.randn(0, 2, 4, 4), torch.randn(0, 18, 4, 4)),
                      (torch.randn(1, 2, 0, 4), torch.randn(1, 18, 0, 4))):
        out, arg = composite.forward(x, offset, 3, 3, 1, 1, 1, 1, 1, 1, 1)
        assert out.shape == arg.shape == (x.shape[0], 2, *offset.shape[2:])
        gx, goff = composite.backward(torch.ones_like(out), x, offset, arg,
                                      3, 3, 1, 1, 1, 1, 1, 1, 1)
        assert gx.shape == x.shape and goff.shape == offset.shape and goff.abs().sum() == 0
