"""Affine-constrained offsets (offset_mode="affine") of DeformConv2d / ModulatedDeformConv2d.

The oracle builds the sampling points the way the definition states them (A p_k + t with
A = I + M, per location, as 2x2 matrices) and feeds the resulting per-tap offsets to the
functional ``deform_conv2d``, independently of the module's constant expansion matrix.
"""
import pytest
import torch
import torch.nn.functional as F

from dcn_det.analysis import OffsetCapture, effective_dilation, sampling_locations
from dcn_det.ops import (DeformConv2d, ModulatedDeformConv2d, affine_offset_basis,
                         deform_conv2d, expand_affine_offsets)

F64 = torch.float64
CLASSES = [DeformConv2d, ModulatedDeformConv2d]


def hand_offsets(params, kernel_size, dilation, groups):
    """Per-tap offsets of affine parameters, by the definition.

    Args:
        params: ``(N, 6*G, H, W)``, per group (m_yy, m_yx, m_xy, m_xx, t_y, t_x).

    Returns:
        ``(N, 2*G*kh*kw, H, W)``: for tap ``k = u*kw + v``, ``A p_k + t - p_k`` as (dy, dx).
    """
    (kh, kw), (dh, dw) = kernel_size, dilation
    n, _, h, w = params.shape
    out = params.new_zeros(n, 2 * groups * kh * kw, h, w)
    for g in range(groups):
        m = params[:, 6 * g:6 * g + 4].permute(0, 2, 3, 1).reshape(n, h, w, 2, 2)
        a = m + torch.eye(2, dtype=params.dtype)  # (N, H, W, 2, 2) acting on (y, x)
        t = params[:, 6 * g + 4:6 * g + 6].permute(0, 2, 3, 1)  # (N, H, W, 2)
        for u in range(kh):
            for v in range(kw):
                p = torch.tensor([(u - (kh - 1) / 2) * dh, (v - (kw - 1) / 2) * dw],
                                 dtype=params.dtype)
                moved = (a @ p) + t - p  # (N, H, W, 2) = (dy, dx)
                k = u * kw + v
                c = g * 2 * kh * kw + 2 * k
                out[:, c] = moved[..., 0]
                out[:, c + 1] = moved[..., 1]
    return out


def _randomize_branch(conv, std=0.2):
    with torch.no_grad():
        conv.conv_offset.weight.normal_(0.0, std)
        conv.conv_offset.bias.normal_(0.0, std)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("dilation,scale", [(1, 1.5), (2, 0.5), (2, 2.0)])
def test_scaled_identity_scales_the_effective_dilation(cls, dilation, scale):
    groups = 2
    conv = cls(4, 4, 3, padding=dilation, dilation=dilation, offset_groups=groups,
               offset_mode="affine")
    with torch.no_grad():
        # A = s*I, t = 0 everywhere: M = (s - 1) I through the bias (the weights are zero).
        for g in range(groups):
            conv.conv_offset.bias[6 * g + 0] = scale - 1  # m_yy
            conv.conv_offset.bias[6 * g + 3] = scale - 1  # m_xx
    with OffsetCapture(conv) as cap, torch.no_grad():
        conv(torch.randn(2, 4, 9, 10))
    ed = effective_dilation(cap.records["conv"])
    assert ed.shape == (2, groups, 9, 10)
    torch.testing.assert_close(ed, torch.full_like(ed, scale * dilation))


@pytest.mark.parametrize("cls", CLASSES)
def test_a_translation_leaves_the_effective_dilation(cls):
    conv = cls(4, 4, 3, padding=2, dilation=2, offset_groups=1, offset_mode="affine")
    with torch.no_grad():
        conv.conv_offset.bias[4], conv.conv_offset.bias[5] = 0.7, -1.3  # t only
    with OffsetCapture(conv) as cap, torch.no_grad():
        conv(torch.randn(1, 4, 6, 7))
    rec = cap.records["conv"]
    ed = effective_dilation(rec)
    torch.testing.assert_close(ed, torch.full_like(ed, 2.0))
    off = rec.offset.reshape(1, 9, 2, 6, 7)
    torch.testing.assert_close(off[:, :, 0], torch.full_like(off[:, :, 0], 0.7))
    torch.testing.assert_close(off[:, :, 1], torch.full_like(off[:, :, 1], -1.3))


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("kernel,stride,dilation,groups", [
    (3, 1, 1, 1), (3, 2, 2, 2), ((3, 2), 1, (2, 1), 2), ((2, 4), 2, 1, 4)])
def test_equals_free_mode_fed_the_hand_built_offsets(cls, kernel, stride, dilation, groups):
    conv = cls(8, 6, kernel, stride=stride, padding=1, dilation=dilation, offset_groups=groups,
               offset_mode="affine").double()
    _randomize_branch(conv)
    x = torch.randn(2, 8, 11, 9, dtype=F64)
    with torch.no_grad():
        branch = conv.conv_offset(x)
        params = branch[:, :6 * groups]
        offset = hand_offsets(params, conv.kernel_size, conv.dilation, groups)
        mask = torch.sigmoid(branch[:, 6 * groups:]) if cls is ModulatedDeformConv2d else None
        want = deform_conv2d(x, offset, conv.weight, conv.bias, stride=stride, padding=1,
                             dilation=dilation, mask=mask)
        got = conv(x)
    assert offset.abs().max() > 0.1  # the offsets really move the samples
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        unmoved = deform_conv2d(x, torch.zeros_like(offset), conv.weight, conv.bias,
                                stride=stride, padding=1, dilation=dilation, mask=mask)
    assert (got - unmoved).abs().max() > 1e-3  # a comparison the offsets matter to


@pytest.mark.parametrize("cls", CLASSES)
def test_zero_initialised_affine_conv_is_the_plain_conv(cls):
    conv = cls(4, 5, 3, padding=1, offset_groups=2, offset_mode="affine").double()
    assert not conv.conv_offset.weight.any() and not conv.conv_offset.bias.any()
    x = torch.randn(2, 4, 7, 8, dtype=F64)
    scale = 0.5 if cls is ModulatedDeformConv2d else 1.0  # mask sigmoid(0)
    with torch.no_grad():
        want = F.conv2d(x, conv.weight * scale, padding=1) + conv.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(conv(x), want)


@pytest.mark.parametrize("cls", CLASSES)
def test_gradcheck_through_the_affine_branch(cls):
    conv = cls(2, 2, 3, padding=1, offset_groups=2, offset_mode="affine").double()
    _randomize_branch(conv, std=0.3)
    x = torch.randn(1, 2, 4, 5, dtype=F64, requires_grad=True)
    w_off = conv.conv_offset.weight.detach().clone().requires_grad_(True)
    b_off = conv.conv_offset.bias.detach().clone().requires_grad_(True)

    def run(x, w_off, b_off):
        return torch.func.functional_call(
            conv, {"conv_offset.weight": w_off, "conv_offset.bias": b_off}, (x,))

    assert torch.autograd.gradcheck(run, (x, w_off, b_off), eps=1e-6, atol=1e-5)


def test_gradcheck_of_the_expansion():
    basis = affine_offset_basis((3, 2), (2, 1), 2, dtype=F64)
    params = torch.randn(2, 12, 3, 4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: expand_affine_offsets(p, basis), (params,))


@pytest.mark.parametrize("kernel,dilation", [((3, 3), (1, 2)), ((2, 3), (1, 1))])
def test_expansion_layout_with_several_offset_groups(kernel, dilation):
    kh, kw = kernel
    groups, taps = 3, kh * kw
    basis = affine_offset_basis(kernel, dilation, groups)
    assert basis.shape == (2 * groups * taps, 6 * groups)
    names = ["m_yy", "m_yx", "m_xy", "m_xx", "t_y", "t_x"]
    for g in range(groups):
        for j, name in enumerate(names):
            params = torch.zeros(1, 6 * groups, 1, 1)
            params[0, 6 * g + j] = 1.0  # one parameter of one group set to 1
            off = expand_affine_offsets(params, basis).reshape(groups, taps, 2)
            others = torch.cat([off[:g], off[g + 1:]])
            assert not others.any(), (g, name)  # other groups do not move
            for k in range(taps):
                u, v = divmod(k, kw)
                py, px = (u - (kh - 1) / 2) * dilation[0], (v - (kw - 1) / 2) * dilation[1]
                want_dy = {"m_yy": py, "m_yx": px, "t_y": 1.0}.get(name, 0.0)
                want_dx = {"m_xy": py, "m_xx": px, "t_x": 1.0}.get(name, 0.0)
                assert off[g, k].tolist() == pytest.approx([want_dy, want_dx]), (g, name, k)


@pytest.mark.parametrize("cls", CLASSES)
def test_offset_conv_size_and_parameter_count(cls):
    groups, kh, kw = 4, 3, 3
    free = cls(16, 8, 3, padding=1, offset_groups=groups)
    affine = cls(16, 8, 3, padding=1, offset_groups=groups, offset_mode="affine")
    mask_channels = groups * kh * kw if cls is ModulatedDeformConv2d else 0
    assert free.conv_offset.out_channels == 2 * groups * kh * kw + mask_channels
    assert affine.conv_offset.out_channels == 6 * groups + mask_channels
    if cls is DeformConv2d:
        ratio = affine.conv_offset.weight.numel() / free.conv_offset.weight.numel()
        assert ratio == pytest.approx(6 * groups / (2 * kh * kw * groups))
    # The expansion matrix is a buffer outside the state dict: checkpoints hold only weights.
    assert set(affine.state_dict()) == set(free.state_dict())
    assert affine.affine_basis.shape == (2 * groups * kh * kw, 6 * groups)
    assert free.affine_basis is None
    assert "offset_mode='affine'" in repr(affine) and "offset_mode" not in repr(free)


def test_bad_offset_mode_is_named():
    with pytest.raises(ValueError, match="offset_mode='shear'"):
        DeformConv2d(4, 4, 3, offset_mode="shear")
    with pytest.raises(ValueError, match="offset_mode='Affine'"):
        ModulatedDeformConv2d(4, 4, 3, offset_mode="Affine")


@pytest.mark.parametrize("cls", CLASSES)
def test_capture_records_the_expanded_offsets_and_sampling_points(cls):
    groups, dil, stride = 2, 2, 2
    conv = cls(4, 4, 3, stride=stride, padding=dil, dilation=dil, offset_groups=groups,
               offset_mode="affine")
    _randomize_branch(conv)
    x = torch.randn(1, 4, 10, 9)
    with OffsetCapture(conv) as cap, torch.no_grad():
        conv(x)
        branch = conv.conv_offset(x)
    rec = cap.records["conv"]
    params = branch[:, :6 * groups]
    want = hand_offsets(params.double(), (3, 3), (dil, dil), groups).float()
    assert rec.offset.shape == (1, 2 * groups * 9, 5, 5)
    torch.testing.assert_close(rec.offset, want, rtol=1e-5, atol=1e-5)
    if cls is ModulatedDeformConv2d:
        torch.testing.assert_close(rec.mask, torch.sigmoid(branch[:, 6 * groups:]))
    else:
        assert rec.mask is None
    # Sampling points of unit (i, j): centre + A p_k + t, in input pixels, for each group.
    i, j = 3, 1
    for g in range(groups):
        pts, _ = sampling_locations(rec, torch.tensor([[float(j), float(i)]]), group=g)
        m = params[0, 6 * g:6 * g + 4, i, j].reshape(2, 2) + torch.eye(2)
        t = params[0, 6 * g + 4:6 * g + 6, i, j]
        # Kernel centre (tap (1, 1)) in input pixels: i*stride - pad + 1*dil.
        centre = torch.tensor([i * stride - dil + dil, j * stride - dil + dil],
                              dtype=torch.float)
        for k in range(9):
            u, v = divmod(k, 3)
            p = torch.tensor([(u - 1) * dil, (v - 1) * dil], dtype=torch.float)
            yx = centre + m @ p + t
            torch.testing.assert_close(pts[0, k], yx.flip(0), rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # torch.compile
def test_torch_compile_fullgraph_affine():
    torch._dynamo.reset()
    module = ModulatedDeformConv2d(4, 3, 3, padding=1, offset_groups=2, offset_mode="affine")
    _randomize_branch(module)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 4, 6, 7, requires_grad=True)
    out_eager = module(x)
    g_eager = torch.autograd.grad(out_eager.sum(), [x, module.conv_offset.weight])
    out = compiled(x)
    g = torch.autograd.grad(out.sum(), [x, module.conv_offset.weight])
    torch.testing.assert_close(out, out_eager)
    for a, b in zip(g, g_eager):
        torch.testing.assert_close(a, b)
