"""deform_conv2d: native CPU kernels vs the pure-PyTorch reference, gradients, tracing, modules."""
import pytest
import torch
import torch.nn.functional as F

from dcn_det.ops import DeformConv2d, ModulatedDeformConv2d, deform_conv2d
from dcn_det.ops.reference import deform_conv2d_ref

F64 = torch.float64


def _out(size, k, stride, pad, dil):
    return (size + 2 * pad - (dil * (k - 1) + 1)) // stride + 1


def make_case(n=2, c_in=4, c_out=6, h=7, w=8, kh=3, kw=3, stride=(1, 1), pad=(1, 1),
              dil=(1, 1), groups=1, og=1, use_mask=True, use_bias=True, offset_std=2.0,
              dtype=F64, avoid_kinks=False):
    """Random arguments for one configuration (offsets large enough to leave the image)."""
    h_out, w_out = _out(h, kh, stride[0], pad[0], dil[0]), _out(w, kw, stride[1], pad[1], dil[1])
    x = torch.randn(n, c_in, h, w, dtype=dtype)
    weight = torch.randn(c_out, c_in // groups, kh, kw, dtype=dtype)
    offset = torch.randn(n, 2 * og * kh * kw, h_out, w_out, dtype=dtype) * offset_std
    if avoid_kinks:
        # Keep every sample point away from integer rows/columns, where bilinear sampling has
        # kinks and finite differences disagree with the analytic gradient.
        offset = torch.round(offset) + torch.empty_like(offset).uniform_(0.2, 0.8)
    mask = torch.rand(n, og * kh * kw, h_out, w_out, dtype=dtype) if use_mask else None
    bias = torch.randn(c_out, dtype=dtype) if use_bias else None
    return dict(input=x, offset=offset, weight=weight, bias=bias, mask=mask, stride=stride,
                padding=pad, dilation=dil)


CONFIGS = {
    "plain3x3": dict(),
    "stride2": dict(stride=(2, 2), h=9, w=9),
    "dilation2_pad2": dict(dil=(2, 2), pad=(2, 2)),
    "groups2": dict(groups=2, c_in=4, c_out=6),
    "offset_groups2": dict(og=2),
    "groups2_offset_groups4": dict(groups=2, og=4, c_in=8, c_out=4),
    "non_square_kernel": dict(kh=2, kw=3, pad=(0, 1), stride=(1, 2), dil=(2, 1)),
    "no_mask": dict(use_mask=False),
    "no_bias": dict(use_bias=False),
    "no_mask_no_bias": dict(use_mask=False, use_bias=False, og=2),
    "kernel1x1": dict(kh=1, kw=1, pad=(0, 0)),
    "far_outside": dict(offset_std=8.0, h=5, w=6),
    "batch1_wide": dict(n=1, h=3, w=11, pad=(1, 0)),
}


def _leaves(case):
    return [case[k] for k in ("input", "offset", "weight", "bias", "mask") if case[k] is not None]


def _assert_matches_reference(case):
    """Output and every input gradient of the op equal the reference's (float64)."""
    leaves = _leaves(case)
    for t in leaves:
        t.requires_grad_()
    ours = deform_conv2d(**case)
    ref = deform_conv2d_ref(**case)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    grad_out = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(ours, leaves, grad_out),
                    torch.autograd.grad(ref, leaves, grad_out)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_and_gradients_match_reference(name):
    _assert_matches_reference(make_case(**CONFIGS[name]))


def _integer_taps_case(n=2, c_in=4, c_out=3, h=5, w=6, og=1, use_mask=True, mixed=False,
                       pad=1, dil=1, stride=1):
    """A case whose every sample lies exactly on an integer row and column, drawn from
    -2, -1, 0, 1, H-2, H-1, H, H+1 (and likewise for x): the border kinks that random offsets
    never hit. ``mixed``: x is moved off the integers by a random fraction in every other tap,
    so that y alone sits on its kink."""
    h_out, w_out = _out(h, 3, stride, pad, dil), _out(w, 3, stride, pad, dil)
    u = torch.arange(9) // 3
    v = torch.arange(9) % 3
    base_y = (torch.arange(h_out) * stride - pad).view(1, 1, 1, h_out, 1) + (u * dil).view(1, 1, 9, 1, 1)
    base_x = (torch.arange(w_out) * stride - pad).view(1, 1, 1, 1, w_out) + (v * dil).view(1, 1, 9, 1, 1)
    ys = torch.tensor([-2, -1, 0, 1, h - 2, h - 1, h, h + 1])
    xs = torch.tensor([-2, -1, 0, 1, w - 2, w - 1, w, w + 1])
    shape = (n, og, 9, h_out, w_out)
    dy = (ys[torch.randint(0, 8, shape)] - base_y).to(F64)
    dx = (xs[torch.randint(0, 8, shape)] - base_x).to(F64)
    if mixed:
        dx[:, :, ::2] += torch.empty_like(dx[:, :, ::2]).uniform_(0.2, 0.8)
    offset = torch.stack([dy, dx], dim=3).reshape(n, 2 * og * 9, h_out, w_out)
    return dict(input=torch.randn(n, c_in, h, w, dtype=F64), offset=offset,
                weight=torch.randn(c_out, c_in, 3, 3, dtype=F64),
                bias=torch.randn(c_out, dtype=F64),
                mask=torch.rand(n, og * 9, h_out, w_out, dtype=F64) if use_mask else None,
                stride=stride, padding=pad, dilation=dil)


@pytest.mark.parametrize("use_mask", [True, False])
@pytest.mark.parametrize("og", [1, 2])
def test_zero_offsets_border_taps_match_reference(use_mask, og):
    """Zero offsets with padding = dilation = 1 (every deformable layer at initialisation): the
    border taps sample exactly at row/column -1, where the offset gradient is the one-sided
    derivative of the floor-based bilinear weights (row/column 0's values), not 0."""
    case = make_case(n=2, c_in=4, c_out=3, h=5, w=6, og=og, use_mask=use_mask, offset_std=0.0)
    assert case["offset"].abs().sum() == 0
    _assert_matches_reference(case)
    # The border taps do get a non-zero offset gradient: tap (0, 1) of output row 0 samples
    # row -1, and its dy gradient is the grad-weighted row 0.
    out = deform_conv2d(**case)
    (g_off,) = torch.autograd.grad(out.sum(), [case["offset"]])
    assert g_off[:, 2 * 1, 0].abs().min() > 0  # dy of tap (u=0, v=1) at output row 0


@pytest.mark.parametrize("use_mask", [True, False])
@pytest.mark.parametrize("og", [1, 2])
@pytest.mark.parametrize("mixed", [False, True])
def test_taps_exactly_on_border_rows_match_reference(use_mask, og, mixed):
    """Taps exactly at -1, 0, H-1 and H (and -2, 1, H-2, H+1) in y and x: every gradient
    (input, offset, mask, weight, bias) equals the reference's."""
    _assert_matches_reference(_integer_taps_case(og=og, use_mask=use_mask, mixed=mixed))


def test_taps_exactly_on_border_with_stride_and_dilation():
    _assert_matches_reference(_integer_taps_case(h=7, w=6, og=2, pad=2, dil=2, stride=2))


def test_large_input_split_into_column_spans():
    """1152 column rows x 2304 positions in float64 exceed the kernel's 16 MiB column buffer,
    so the positions are processed in several spans (and partial 256-position chunks)."""
    _assert_matches_reference(make_case(n=1, c_in=128, c_out=4, h=48, w=48, groups=2, og=4,
                                        offset_std=1.0))


@pytest.mark.parametrize("use_mask", [True, False])
def test_gradcheck(use_mask):
    case = make_case(n=1, c_in=2, c_out=2, h=4, w=5, kh=2, kw=2, pad=(1, 0), og=2,
                     use_mask=use_mask, avoid_kinks=True, offset_std=1.5)
    leaves = _leaves(case)
    for t in leaves:
        t.requires_grad_()
    names = [k for k in ("input", "offset", "weight", "bias", "mask") if case[k] is not None]
    rest = {k: v for k, v in case.items() if k not in names}

    def fn(*tensors):
        return deform_conv2d(**dict(zip(names, tensors)), **rest)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6)


def _op_args(case, groups=1):
    og = case["offset"].shape[1] // (2 * case["weight"].shape[2] * case["weight"].shape[3])
    return (case["input"], case["weight"], case["offset"], case["mask"], case["bias"],
            *case["stride"], *case["padding"], *case["dilation"], groups, og)


@pytest.mark.slow  # torch.library.opcheck: fake tensors, autograd and AOT dispatch checks
@pytest.mark.parametrize("use_mask", [True, False])
def test_opcheck(use_mask):
    case = make_case(n=1, c_in=4, c_out=2, h=5, w=5, og=2, groups=2, use_mask=use_mask,
                     dtype=torch.float32)
    for t in _leaves(case):
        t.requires_grad_()
    args = _op_args(case, groups=2)
    torch.library.opcheck(torch.ops.dcn_det.deform_conv2d.default, args)
    plain = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    grad_out = torch.randn(1, 2, 5, 5)
    torch.library.opcheck(torch.ops.dcn_det._deform_conv2d_backward.default, (grad_out, *plain))


@pytest.mark.slow  # torch.compile
def test_torch_compile_fullgraph_aot_eager():
    """backend="aot_eager": traces through the fake kernels and the autograd formula."""
    torch._dynamo.reset()
    module = ModulatedDeformConv2d(4, 3, 3, padding=1, offset_groups=2)
    torch.nn.init.normal_(module.conv_offset.weight, std=0.3)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 4, 6, 7, requires_grad=True)
    out_eager = module(x)
    g_eager = torch.autograd.grad(out_eager.sum(), [x, module.weight])
    out = compiled(x)
    g = torch.autograd.grad(out.sum(), [x, module.weight])
    torch.testing.assert_close(out, out_eager)
    for a, b in zip(g, g_eager):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("groups,stride,dil", [(1, 1, 1), (2, 2, 1), (1, 1, 2)])
def test_zero_offsets_equal_conv2d(groups, stride, dil):
    x = torch.randn(2, 4, 9, 8, dtype=F64)
    weight = torch.randn(6, 4 // groups, 3, 3, dtype=F64)
    bias = torch.randn(6, dtype=F64)
    h_out, w_out = _out(9, 3, stride, 1, dil), _out(8, 3, stride, 1, dil)
    offset = torch.zeros(2, 2 * 2 * 9, h_out, w_out, dtype=F64)
    ours = deform_conv2d(x, offset, weight, bias, stride=stride, padding=1, dilation=dil)
    dense = F.conv2d(x, weight, bias, stride=stride, padding=1, dilation=dil, groups=groups)
    torch.testing.assert_close(ours, dense)


def test_modules_start_as_plain_conv():
    x = torch.randn(2, 4, 8, 9)
    m = DeformConv2d(4, 6, (3, 2), stride=2, padding=1, dilation=(1, 2), groups=2,
                     offset_groups=2, offset_lr_mult=0.1)
    dense = F.conv2d(x, m.weight, m.bias, stride=2, padding=1, dilation=(1, 2), groups=2)
    torch.testing.assert_close(m(x), dense)
    assert m.conv_offset.out_channels == 2 * 2 * 6 and m.conv_offset.lr_mult == 0.1
    assert "offset_groups=2" in repr(m) and "offset_lr_mult=0.1" in repr(m)

    mm = ModulatedDeformConv2d(4, 6, 3, padding=1, offset_groups=4, bias=False)
    assert mm.conv_offset.out_channels == 3 * 4 * 9 and mm.bias is None
    torch.testing.assert_close(mm(x), 0.5 * F.conv2d(x, mm.weight, padding=1))
    assert mm.conv_offset.lr_mult == 1.0 and "bias=False" in repr(mm)


def test_module_weight_init_like_conv2d():
    m = DeformConv2d(16, 8, 3)
    bound = 1.0 / (16 * 9) ** 0.5  # kaiming_uniform(a=sqrt(5)) bound = 1/sqrt(fan_in)
    assert m.weight.abs().max() <= bound and m.weight.std() > bound / 3
    assert m.bias.abs().max() <= bound
    assert m.conv_offset.weight.abs().sum() == 0 and m.conv_offset.bias.abs().sum() == 0


def test_module_offsets_receive_gradients():
    m = ModulatedDeformConv2d(2, 2, 3, padding=1)
    torch.nn.init.normal_(m.conv_offset.weight, std=0.1)
    m(torch.randn(1, 2, 5, 5)).square().sum().backward()
    assert m.conv_offset.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("use_mask", [True, False])
def test_zero_size_batch(use_mask):
    case = make_case(n=0, use_mask=use_mask)
    leaves = _leaves(case)
    for t in leaves:
        t.requires_grad_()
    out = deform_conv2d(**case)
    assert out.shape == (0, 6, 7, 8)
    grads = torch.autograd.grad(out.sum(), leaves)
    for g, t in zip(grads, leaves):
        assert g.shape == t.shape
    assert torch.equal(grads[3], torch.zeros(6, dtype=F64))  # bias


def test_empty_image_gives_bias_only():
    """H = 0 with padding still has outputs; every sample is outside, so out = bias."""
    x = torch.randn(1, 2, 0, 4, dtype=F64, requires_grad=True)
    weight = torch.randn(3, 2, 1, 1, dtype=F64, requires_grad=True)
    bias = torch.randn(3, dtype=F64)
    offset = torch.randn(1, 2, 2, 6, dtype=F64, requires_grad=True)
    out = deform_conv2d(x, offset, weight, bias, padding=1)
    torch.testing.assert_close(out, bias.view(1, 3, 1, 1).expand(1, 3, 2, 6))
    g_x, g_w, g_off = torch.autograd.grad(out.sum(), [x, weight, offset])
    assert g_x.shape == x.shape and g_w.abs().sum() == 0 and g_off.abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_input_computes_in_float32(dtype):
    case = make_case(n=1, dtype=torch.float32, offset_std=1.0)
    low = {k: (v.to(dtype) if isinstance(v, torch.Tensor) else v) for k, v in case.items()}
    for t in _leaves(low):
        t.requires_grad_()
    out = deform_conv2d(**low)
    assert out.dtype == dtype
    up = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in low.items()}
    torch.testing.assert_close(out, deform_conv2d_ref(**up).to(dtype))
    out.float().sum().backward()
    assert low["offset"].grad.dtype == dtype and torch.isfinite(low["offset"].grad.float()).all()


def test_autocast_cpu_runs_in_float32():
    m = DeformConv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 6, 6).bfloat16()
    offset = torch.randn(1, 18, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = deform_conv2d(x, offset, m.weight, m.bias, padding=1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, deform_conv2d(x.float(), offset, m.weight, m.bias, padding=1))


def _bad(**changes):
    case = make_case(n=1, c_in=4, c_out=6, h=6, w=6, og=2, dtype=torch.float32)
    case.update(changes)
    return case


BAD_INPUTS = {
    "input_rank": (dict(input=torch.randn(4, 6, 6)), ["input", "(4, 6, 6)", "(N, C_in, H, W)"]),
    "weight_rank": (dict(weight=torch.randn(6, 4, 3)), ["weight", "(6, 4, 3)"]),
    "offset_rank": (dict(offset=torch.randn(36, 6, 6)), ["offset", "(36, 6, 6)"]),
    "offset_channels": (dict(offset=torch.randn(1, 17, 6, 6)), ["offset.size(1)", "18", "17"]),
    "offset_spatial": (dict(offset=torch.randn(1, 36, 5, 6)), ["offset", "(1, 36, 6, 6)",
                                                               "(1, 36, 5, 6)"]),
    "offset_batch": (dict(offset=torch.randn(2, 36, 6, 6)), ["offset", "(1, 36, 6, 6)",
                                                             "(2, 36, 6, 6)"]),
    "mask_channels": (dict(mask=torch.rand(1, 9, 6, 6)), ["mask", "(1, 18, 6, 6)",
                                                          "(1, 9, 6, 6)"]),
    "groups_indivisible": (dict(weight=torch.randn(6, 3, 3, 3)), ["C_in=4", "weight.size(1)=3"]),
    "c_out_indivisible": (dict(weight=torch.randn(5, 2, 3, 3), bias=torch.randn(5)),
                          ["weight.size(0)=5", "groups=2"]),
    "offset_groups_indivisible": (
        dict(offset=torch.randn(1, 54, 6, 6), mask=torch.rand(1, 27, 6, 6)),
        ["offset groups 3", "C_in=4"]),
    "bias_length": (dict(bias=torch.randn(5)), ["bias", "(6,)", "(5,)"]),
    "dtype_mismatch": (dict(weight=torch.randn(6, 4, 3, 3, dtype=F64)), ["weight", "float64",
                                                                         "float32"]),
    "device_mismatch": (dict(weight=torch.randn(6, 4, 3, 3, device="meta")), ["weight", "meta",
                                                                             "cpu"]),
    "integer_input": (dict(input=torch.ones(1, 4, 6, 6, dtype=torch.int64)), ["input", "int64"]),
    "bad_stride": (dict(stride=0), ["stride", "(0, 0)"]),
    "too_small": (dict(padding=0, input=torch.randn(1, 4, 2, 2)), ["input", "(1, 4, 2, 2)",
                                                                   "too small"]),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_messages(name):
    changes, words = BAD_INPUTS[name]
    with pytest.raises(ValueError) as info:
        deform_conv2d(**_bad(**changes))
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_native_op_checks_shapes_without_the_wrapper():
    case = _bad()
    args = list(_op_args(case))
    args[2] = torch.randn(1, 36, 5, 6)  # offset with the wrong spatial size
    with pytest.raises(RuntimeError, match=r"offset must be \[1, 36, 6, 6\]"):
        torch.ops.dcn_det.deform_conv2d(*args)
    args = list(_op_args(case))
    args[-2] = 3  # groups that do not divide the channels
    with pytest.raises(RuntimeError, match="groups=3"):
        torch.ops.dcn_det.deform_conv2d(*args)
    args = list(_op_args(case))
    args[0] = torch.randn(1, 4, 2, 6)  # 3x3 kernel, no padding, stride 2: no output rows
    args[2] = torch.randn(1, 36, 1, 2)
    args[5:11] = [2, 2, 0, 0, 1, 1]
    with pytest.raises(RuntimeError, match="too small"):
        torch.ops.dcn_det.deform_conv2d(*args)
    args = list(_op_args(case))
    with pytest.raises(RuntimeError, match="grad_output must be"):
        torch.ops.dcn_det._deform_conv2d_backward(torch.randn(1, 6, 6, 5), *args)


@pytest.mark.parametrize("use_mask", [True, False])
def test_matches_torchvision(tv_ops, use_mask):
    case = make_case(og=2, groups=2, use_mask=use_mask, dtype=torch.float32)
    torch.testing.assert_close(deform_conv2d(**case), tv_ops.deform_conv2d(**case),
                               rtol=1e-4, atol=1e-4)
