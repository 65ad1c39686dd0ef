"""Tests of dcn_det.ops.deform_psroi_pool against the pure-PyTorch reference (DESIGN 4.2)."""
import math

import pytest
import torch

from dcn_det.ops import DeformPSRoIPool, deform_psroi_pool
from dcn_det.ops.reference import deform_psroi_pool_ref


def make_rois(R, N, img_h, img_w, kinds=("inside", "partial", "outside", "tiny", "huge")):
    """(R, 5) float64 RoIs in image pixels, cycling through the given kinds of box."""
    rows = []
    for i in range(R):
        kind = kinds[i % len(kinds)]
        b = float(torch.randint(0, N, ()).item())
        if kind == "inside":
            x1, y1 = torch.rand(2).tolist()
            x1, y1 = x1 * img_w * 0.5, y1 * img_h * 0.5
            w, h = (torch.rand(2) * 0.5 + 0.2).tolist()
            box = [x1, y1, x1 + w * img_w, y1 + h * img_h]
        elif kind == "partial":
            x1, y1 = (torch.rand(2) * 0.6 - 0.4).tolist()
            box = [x1 * img_w, y1 * img_h, (x1 + 0.8) * img_w, (y1 + 0.9) * img_h]
        elif kind == "outside":  # wholly to the right or below
            if i % 2:
                box = [img_w * 1.3, 0.2 * img_h, img_w * 1.8, 0.6 * img_h]
            else:
                box = [0.1 * img_w, -img_h * 0.9, 0.5 * img_w, -img_h * 0.4]
        elif kind == "tiny":  # under a pixel, so x2 may round below x1
            x1, y1 = (torch.rand(2) * torch.tensor([img_w, img_h])).tolist()
            box = [x1, y1, x1 + 0.4, y1 + 0.3]
        else:  # huge: three times the image
            box = [-img_w, -img_h, 2 * img_w, 2 * img_h]
        rows.append([b] + box)
    return torch.tensor(rows, dtype=torch.float64).reshape(R, 5)


# (N, output_dim, group_size, pooled, part, sample_per_part, C_off (0: no offset), H, W,
#  spatial_scale, trans_std, offset magnitude, R)
CONFIGS = [
    (1, 2, 1, 3, 3, 1, 1, 6, 7, 1 / 4, 0.1, 1.0, 5),
    (2, 3, 3, 3, 3, 2, 3, 7, 8, 1 / 2, 0.1, 1.0, 6),
    (2, 2, 7, 7, 7, 4, 1, 9, 10, 1 / 4, 0.1, 1.0, 5),
    (1, 4, 3, 3, 5, 3, 2, 6, 6, 1 / 3, 0.1, 1.0, 5),      # part_size > pooled
    (2, 2, 3, 5, 2, 2, 2, 8, 5, 1.0, 0.1, 1.0, 7),        # part_size < pooled
    (1, 3, 7, 3, 3, 2, 3, 7, 7, 1 / 4, 0.1, 1.0, 5),      # group_size > pooled
    (3, 2, 1, 4, 4, 3, 0, 5, 9, 1 / 2, 0.1, 1.0, 8),      # offset=None, 3 images
    (1, 2, 3, 3, 3, 4, 2, 5, 6, 1 / 2, 0.1, 8.0, 5),      # large offsets push samples out
    (2, 6, 1, 2, 2, 2, 3, 6, 5, 0.37, 0.3, 2.0, 10),      # 2 channels per offset class
    (1, 1, 2, 3, 3, 1, 0, 4, 4, 1.0, 0.0, 1.0, 0),        # zero RoIs
]
IDS = [f"cfg{i}" for i in range(len(CONFIGS))]


def make_case(cfg, dtype=torch.float64):
    N, C, G, P, part, S, c_off, H, W, scale, tstd, mag, R = cfg
    x = torch.randn(N, C * G * G, H, W, dtype=dtype)
    rois = make_rois(R, N, H / scale, W / scale).to(dtype)
    off = None
    if c_off:
        off = (torch.randn(R, 2 * c_off, part, part) * mag).to(dtype)
    kw = dict(spatial_scale=scale, output_dim=C, group_size=G, pooled_size=P, part_size=part,
              sample_per_part=S, trans_std=tstd)
    return x, rois, off, kw


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_forward_and_grads_match_reference(cfg):
    x, rois, off, kw = make_case(cfg)
    x.requires_grad_()
    inputs = [x] if off is None else [x, off.requires_grad_()]
    out = deform_psroi_pool(x, rois, off, **kw)
    ref = deform_psroi_pool_ref(x, rois, off, **kw)
    assert out.shape == (rois.size(0), kw["output_dim"], kw["pooled_size"], kw["pooled_size"])
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    gy = torch.randn_like(out)
    got = torch.autograd.grad(out, inputs, gy, allow_unused=True)
    want = torch.autograd.grad(ref, inputs, gy, allow_unused=True)
    for g, w in zip(got, want):
        w = torch.zeros_like(g) if w is None else w
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("c_off", [1, 2])
@pytest.mark.parametrize("group", [1, 2])
def test_samples_exactly_on_integer_and_border_positions(c_off, group):
    """Samples exactly on integers (floor = ceil: a zero offset derivative in both), on the
    skip limits -0.5 and W-0.5 (inclusive) and on the clamp limits 0 and W-1: forward and both
    gradients equal the reference's. Integer RoIs at spatial_scale 1 with 2x2 bins of 2x2
    samples make the sample step exactly 1 pixel, starting at x1 - 0.5; an integer offset o
    with trans_std 1/8 moves the samples by o/2 pixels, onto integers or half-integers."""
    H, W, P, S, C = 5, 6, 2, 2, 2
    R = 48
    x = torch.randn(2, C * group * group, H, W, dtype=torch.float64, requires_grad=True)
    x1 = torch.randint(-4, W + 1, (R,)).double()
    y1 = torch.randint(-4, H + 1, (R,)).double()
    idx = torch.randint(0, 2, (R,)).double()
    rois = torch.stack([idx, x1, y1, x1 + P * S - 1, y1 + P * S - 1], dim=1)
    off = torch.randint(-3, 4, (R, 2 * c_off, P, P)).double().requires_grad_()
    kw = dict(spatial_scale=1.0, output_dim=C, group_size=group, pooled_size=P, part_size=P,
              sample_per_part=S, trans_std=0.125)
    out = deform_psroi_pool(x, rois, off, **kw)
    ref = deform_psroi_pool_ref(x, rois, off, **kw)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    gy = torch.randn_like(out)
    for g, w in zip(torch.autograd.grad(out, [x, off], gy),
                    torch.autograd.grad(ref, [x, off], gy)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    # The RoIs and offsets reach the skip limits: some bins lose some or all samples.
    _, count = torch.ops.dcn_det.deform_psroi_pool(x.detach(), rois, off.detach(), *kw.values())
    assert (count == 0).any() and (count == S * S).any() and ((count > 0) & (count < S * S)).any()


def test_configs_exercise_the_edge_cases():
    """The random cases really contain skipped samples, empty bins and moved samples."""
    x, rois, off, kw = make_case(CONFIGS[7])
    _, count = torch.ops.dcn_det.deform_psroi_pool(x, rois, off, *kw.values())
    assert (count == 0).any() and (count == kw["sample_per_part"] ** 2).any()
    assert ((count > 0) & (count < kw["sample_per_part"] ** 2)).any()
    plain = deform_psroi_pool(x, rois, None, **kw)
    assert not torch.allclose(plain, deform_psroi_pool(x, rois, off, **kw))


def test_float32_matches_reference():
    x, rois, off, kw = make_case(CONFIGS[2], dtype=torch.float32)
    torch.testing.assert_close(deform_psroi_pool(x, rois, off, **kw),
                               deform_psroi_pool_ref(x, rois, off, **kw), rtol=1e-5, atol=1e-5)


def test_position_sensitive_channels_and_empty_bins():
    """Input channel k filled with k: each bin reads channel (c*G + gh)*G + gw; outside -> 0."""
    C, G, P, H, W = 2, 3, 5, 6, 6
    x = torch.arange(C * G * G, dtype=torch.float64).view(1, -1, 1, 1).expand(1, -1, H, W)
    rois = torch.tensor([[0, 0, 0, 5, 5], [0, 20, 20, 30, 30]], dtype=torch.float64)
    out = deform_psroi_pool(x.contiguous(), rois, None, 1.0, C, G, P, sample_per_part=2)
    g = [min(p * G // P, G - 1) for p in range(P)]
    want = torch.tensor([[[(c * G + g[ph]) * G + g[pw] for pw in range(P)] for ph in range(P)]
                         for c in range(C)], dtype=torch.float64)
    torch.testing.assert_close(out[0], want)
    assert torch.equal(out[1], torch.zeros_like(out[1]))


def test_coordinates_round_half_away_from_zero():
    """A ramp input f(h, w) = w gives the mean sample x, computed here by hand."""
    H, W, P, S = 8, 40, 2, 2
    x = torch.arange(W, dtype=torch.float64).expand(1, 1, H, W).contiguous()
    rois = torch.tensor([[0, 2.5, 1, 12.5, 6], [0, 3.5, 1, 20.5, 6]], dtype=torch.float64)
    out = deform_psroi_pool(x, rois, None, 1.0, 1, 1, P, sample_per_part=S)
    for r, (x1, x2) in enumerate([(3, 13), (4, 21)]):  # C round: 2.5 -> 3, 12.5 -> 13
        bin_w = (x2 + 1 - x1) / P
        for pw in range(P):
            xs = [x1 - 0.5 + pw * bin_w + i * bin_w / S for i in range(S)]
            xs = [min(max(v, 0.0), W - 1) for v in xs]
            assert out[r, 0, 0, pw].item() == pytest.approx(sum(xs) / S)


def _gradcheck_case():
    """Offsets and RoIs whose samples stay off the integer grid and the image border."""
    N, C, G, P, S, H, W = 2, 2, 2, 2, 2, 6, 7
    x = torch.randn(N, C * G * G, H, W, dtype=torch.float64)
    rois = torch.tensor([[0, 3, 2, 17, 15], [1, -6, 5, 9, 30], [1, 10, 1, 26, 12]],
                        dtype=torch.float64)
    off = torch.randn(3, 2 * C, P, P, dtype=torch.float64) * 0.5
    kw = dict(spatial_scale=0.31, output_dim=C, group_size=G, pooled_size=P,
              sample_per_part=S, trans_std=0.1)
    return x, rois, off, kw


def test_gradcheck():
    x, rois, off, kw = _gradcheck_case()
    x.requires_grad_()
    off.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, o: deform_psroi_pool(a, rois, o, **kw), (x, off))
    assert torch.autograd.gradcheck(lambda a: deform_psroi_pool(a, rois, None, **kw), (x,))


@pytest.mark.slow  # torch.library.opcheck: fake tensors, autograd and AOT dispatch checks
def test_opcheck():
    x, rois, off, kw = _gradcheck_case()
    args = tuple(kw[k] for k in ("spatial_scale", "output_dim", "group_size", "pooled_size"))
    rest = (kw["pooled_size"], kw["sample_per_part"], kw["trans_std"])
    for o in (off.requires_grad_(), None):
        torch.library.opcheck(torch.ops.dcn_det.deform_psroi_pool.default,
                              (x.requires_grad_(), rois, o) + args + rest)


def test_torch_compile_module():
    torch._dynamo.reset()
    mod = DeformPSRoIPool(0.5, output_dim=2, group_size=3, pooled_size=3, trans_std=0.1)
    x = torch.randn(2, 18, 6, 7, dtype=torch.float64, requires_grad=True)
    off = (torch.randn(4, 4, 3, 3, dtype=torch.float64) * 0.5).requires_grad_()
    rois = make_rois(4, 2, 12, 14)
    compiled = torch.compile(mod, backend="aot_eager", fullgraph=True)
    out = compiled(x, rois, off)
    want = mod(x, rois, off)
    torch.testing.assert_close(out, want)
    g1 = torch.autograd.grad(out.sum(), [x, off])
    g2 = torch.autograd.grad(want.sum(), [x, off])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def _good():
    x = torch.randn(2, 2 * 9, 5, 5)
    rois = torch.tensor([[0, 1, 1, 8, 8], [1, 0, 0, 4, 4]], dtype=torch.float32)
    off = torch.zeros(2, 4, 3, 3)
    return dict(input=x, rois=rois, offset=off, spatial_scale=0.5, output_dim=2, group_size=3,
                pooled_size=3)


@pytest.mark.parametrize("change, pattern", [
    (dict(input=torch.randn(2, 17, 5, 5)), r"input must have output_dim\*group_size\*\*2 = .*18 "
                                           r"channels, got shape \(2, 17, 5, 5\)"),
    (dict(input=torch.randn(18, 5, 5)), r"input must have shape .*got shape \(18, 5, 5\)"),
    (dict(input=torch.zeros(2, 18, 5, 5, dtype=torch.int64)), r"input must be a floating"),
    (dict(rois=torch.zeros(2, 4)), r"rois must have shape \(R, 5\).*got shape \(2, 4\)"),
    (dict(offset=torch.zeros(3, 4, 3, 3)), r"offset must have shape .*\(2, 2\*C_off, 3, 3\), "
                                           r"got shape \(3, 4, 3, 3\)"),
    (dict(offset=torch.zeros(2, 4, 2, 2)), r"offset must have shape .*got shape \(2, 4, 2, 2\)"),
    (dict(offset=torch.zeros(2, 3, 3, 3)), r"offset must have shape .*got shape \(2, 3, 3, 3\)"),
    (dict(offset=torch.zeros(2, 6, 3, 3)), r"output_dim \(2\) must be divisible .*C_off .* 3"),
    (dict(offset=torch.zeros(2, 4, 3, 3, dtype=torch.float64)), r"offset has dtype"),
    (dict(rois=torch.zeros(2, 5, dtype=torch.float64)), r"rois has dtype"),
    (dict(pooled_size=0), r"pooled_size must be a positive int, got 0"),
    (dict(input=torch.randn(2, 18, 0, 5)), r"non-empty spatial size .*\(2, 18, 0, 5\)"),
    (dict(group_size=2.0), r"group_size must be a positive int, got 2.0"),
])
def test_bad_inputs_raise_clear_errors(change, pattern):
    kw = {**_good(), **change}
    with pytest.raises(ValueError, match=pattern):
        deform_psroi_pool(**kw)


def test_native_op_checks_instead_of_crashing():
    kw = _good()
    x, rois, off = kw["input"], kw["rois"], kw["offset"]
    op = torch.ops.dcn_det.deform_psroi_pool
    bad = rois.clone()
    bad[1, 0] = 2  # only 2 images
    with pytest.raises(RuntimeError, match=r"rois\[1, 0\] \(batch index\) is 2"):
        op(x, bad, off, 0.5, 2, 3, 3, 3, 2, 0.1)
    with pytest.raises(RuntimeError, match=r"rois\[0, 0\] \(batch index\) is -1"):
        op(x, torch.tensor([[-1.0, 0, 0, 1, 1]]), None, 0.5, 2, 3, 3, 3, 2, 0.1)
    with pytest.raises(RuntimeError, match="output_dim\\*group_size\\^2 = 27"):
        op(x, rois, off, 0.5, 3, 3, 3, 3, 2, 0.1)
    with pytest.raises(RuntimeError, match="offset must be"):
        op(x, rois, off[:, :, :2], 0.5, 2, 3, 3, 3, 2, 0.1)
    with pytest.raises(RuntimeError, match="rois must be"):
        op(x, rois[:, :4], off, 0.5, 2, 3, 3, 3, 2, 0.1)
    with pytest.raises(RuntimeError, match=r"rois\[0, 0\] \(batch index\) is 0.5"):
        op(x, torch.tensor([[0.5, 0, 0, 1, 1]]), None, 0.5, 2, 3, 3, 3, 2, 0.1)
    with pytest.raises(RuntimeError, match=r"rois\[1, 3\] is nan; box coordinates must be"):
        op(x, torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, math.nan, 1]]), None, 0.5, 2, 3, 3, 3,
           2, 0.1)
    with pytest.raises(RuntimeError, match="non-empty spatial size"):
        op(x[:, :, :0], rois, off, 0.5, 2, 3, 3, 3, 2, 0.1)
    out, count = op(x, rois, off, 0.5, 2, 3, 3, 3, 2, 0.1)
    with pytest.raises(RuntimeError, match="grad_output and count must be"):
        torch.ops.dcn_det._deform_psroi_pool_backward(out[:1], x, rois, off, count, 0.5, 2, 3,
                                                      3, 3, 2, 0.1)


def test_non_finite_offset_propagates_nan():
    """A NaN offset poisons exactly the bins that use it instead of vanishing into zeros."""
    kw = _good()
    kw["offset"][1, 2, 0, 1] = math.nan  # class 1, x, part (0, 1); one channel per class
    x = kw["input"].requires_grad_()
    out = deform_psroi_pool(**kw, trans_std=0.1)
    nan = torch.zeros_like(out, dtype=torch.bool)
    nan[1, 1, 0, 1] = True
    assert torch.equal(out.isnan(), nan)
    out[~nan].sum().backward()
    assert x.grad.isfinite().all()


def test_empty_batch_and_non_contiguous():
    out = deform_psroi_pool(torch.randn(0, 9, 4, 4), torch.zeros(0, 5), None, 1.0, 1, 3, 3)
    assert out.shape == (0, 1, 3, 3)
    x, rois, off, kw = make_case(CONFIGS[1])
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)
    ot = off.transpose(2, 3).contiguous().transpose(2, 3)
    assert not xt.is_contiguous() and not ot.is_contiguous()
    torch.testing.assert_close(deform_psroi_pool(xt, rois, ot, **kw),
                               deform_psroi_pool(x, rois, off, **kw), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_on_cpu(dtype):
    x, rois, off, kw = make_case(CONFIGS[1], dtype=torch.float32)
    # Half RoIs lose sub-pixel precision, so the float32 oracle gets the same rounded values.
    x, rois, off = x.to(dtype), rois.to(dtype), off.to(dtype)
    want = deform_psroi_pool_ref(x.float(), rois.float(), off.float(), **kw)
    xh, oh = x.clone().requires_grad_(), off.clone().requires_grad_()
    out = deform_psroi_pool(xh, rois, oh, **kw)
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), want.to(dtype).float(), rtol=0.02, atol=0.02)
    out.sum().backward()
    assert xh.grad.dtype == dtype and oh.grad.dtype == dtype



def test_cpu_autocast_runs_in_float32():
    """bfloat16 features with float32 RoIs, as a detector under CPU autocast produces them."""
    x, rois, off, kw = make_case(CONFIGS[1], dtype=torch.float32)
    xb = x.to(torch.bfloat16)
    want = deform_psroi_pool(xb.float(), rois, off, **kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = deform_psroi_pool(xb, rois, off, **kw)
        native, _ = torch.ops.dcn_det.deform_psroi_pool(xb, rois.bfloat16(), None,
                                                         *kw.values())
    assert out.dtype == torch.float32 and native.dtype == torch.float32
    torch.testing.assert_close(out, want)
    with pytest.raises(ValueError, match="rois has dtype torch.bfloat16"):
        deform_psroi_pool(x, rois.bfloat16(), off, **kw)  # outside autocast: no silent cast


def _module_inputs(G, C):
    x = torch.randn(2, C * G * G, 7, 8, dtype=torch.float64)
    rois = make_rois(5, 2, 14, 16, kinds=("inside", "partial"))
    return x, rois


@pytest.mark.parametrize("G, C, with_offset", [(3, 2, False), (3, 4, True), (1, 3, True)])
def test_module_is_the_op_without_parameters(G, C, with_offset):
    mod = DeformPSRoIPool(0.5, output_dim=C, group_size=G, pooled_size=3, trans_std=0.1)
    assert list(mod.parameters()) == [] and mod.part_size == 3
    x, rois = _module_inputs(G, C)
    off = torch.randn(5, 2 * (C if G > 1 else 1), 3, 3, dtype=torch.float64) \
        if with_offset else None
    out = mod(x, rois, off)
    assert out.shape == (5, C, 3, 3)
    want = deform_psroi_pool(x, rois, off, 0.5, C, G, 3, sample_per_part=4, trans_std=0.1)
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    if with_offset:  # the offsets do move the bins
        plain = deform_psroi_pool(x, rois, None, 0.5, C, G, 3, sample_per_part=4)
        assert not torch.allclose(out, plain)


def test_module_bad_offset_is_named():
    mod = DeformPSRoIPool(1.0, 2, 3, 3)
    with pytest.raises(ValueError, match="offset"):
        mod(torch.randn(1, 18, 4, 4), torch.tensor([[0, 0, 0, 3.0, 3.0]]),
            torch.zeros(1, 3, 3, 3))


def test_official_rfcn_shapes():
    """The pooling of R-FCN: K+1 classes from 7*7*(K+1) score maps, per-class offsets."""
    K1 = 3
    mod = DeformPSRoIPool(1 / 16, output_dim=K1, group_size=7, pooled_size=7)
    x = torch.randn(1, K1 * 49, 10, 12)
    rois = torch.tensor([[0, 10.0, 20, 150, 140]])
    assert mod(x, rois, torch.randn(1, 2 * K1, 7, 7)).shape == (1, K1, 7, 7)
    assert math.isclose(mod.spatial_scale, 0.0625)
