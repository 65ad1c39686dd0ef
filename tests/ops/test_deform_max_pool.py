"""deform_max_pool2d: the CPU kernel vs the float64 reference, max_pool2d, hand-computed border
samples, ties, gradients, tracing (compile, export, ONNX) and the module."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dcn_det.ops import DeformMaxPool2d, deform_max_pool2d
from dcn_det.ops.reference import deform_max_pool2d_ref

F64 = torch.float64


def _out(size, k, stride, pad, dil):
    return (size + 2 * pad - (dil * (k - 1) + 1)) // stride + 1


def make_case(n=2, c=4, h=7, w=8, k=(3, 3), stride=(1, 1), pad=(1, 1), dil=(1, 1), og=1,
              offset_std=2.0, dtype=F64, avoid_kinks=False):
    """Random arguments for one configuration (offsets large enough to leave the image)."""
    h_out, w_out = _out(h, k[0], stride[0], pad[0], dil[0]), _out(w, k[1], stride[1], pad[1], dil[1])
    x = torch.randn(n, c, h, w, dtype=dtype)
    offset = torch.randn(n, 2 * og * k[0] * k[1], h_out, w_out, dtype=dtype) * offset_std
    if avoid_kinks:
        # Away from integer rows/columns (bilinear kinks, the clamp's ends, the skip borders
        # -1 and H): finite differences then agree with the analytic gradient.
        offset = torch.round(offset) + torch.empty_like(offset).uniform_(0.2, 0.8)
    return dict(input=x, offset=offset, kernel_size=k, stride=stride, padding=pad, dilation=dil)


CONFIGS = {
    "plain3x3": dict(),
    "stem_stride2": dict(stride=(2, 2), h=9, w=10),
    "dilation2_pad2": dict(dil=(2, 2), pad=(2, 2)),
    "offset_groups2": dict(og=2),
    "offset_groups4": dict(og=4, c=8),
    "non_square_kernel": dict(k=(2, 3), pad=(0, 1), stride=(1, 2), dil=(2, 1)),
    "kernel1x1": dict(k=(1, 1), pad=(0, 0)),
    "far_outside": dict(offset_std=8.0, h=5, w=6),
    "batch1_wide": dict(n=1, h=3, w=11, pad=(1, 0)),
    "padding_beyond_half_kernel": dict(pad=(3, 2), offset_std=0.5),
}


def _assert_matches_reference(case, grad_out=None):
    """Output, argmax and both input gradients of the op equal the reference's (float64)."""
    x, off = case["input"].requires_grad_(), case["offset"].requires_grad_()
    rest = {k: v for k, v in case.items() if k not in ("input", "offset")}
    ours = deform_max_pool2d(x, off, **rest)
    ref, ref_arg = deform_max_pool2d_ref(x, off, **rest)
    _, arg = torch.ops.dcn_det.deform_max_pool2d(x.detach(), off.detach(), *_geometry(case))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(arg, ref_arg)
    grad_out = torch.randn_like(ref) if grad_out is None else grad_out
    for a, b in zip(torch.autograd.grad(ours, [x, off], grad_out),
                    torch.autograd.grad(ref, [x, off], grad_out)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    return arg


def _geometry(case):
    k = case["kernel_size"]
    og = case["offset"].shape[1] // (2 * k[0] * k[1])
    return (*k, *case["stride"], *case["padding"], *case["dilation"], og)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_argmax_and_gradients_match_reference(name):
    arg = _assert_matches_reference(make_case(**CONFIGS[name]))
    assert (arg >= 0).any()  # the case exercises real maxima, not only skipped outputs


def test_reference_agrees_on_some_skipped_outputs():
    """Padding 3 around a 3x3 kernel: the corner outputs have every tap in the padding."""
    case = make_case(pad=(3, 3), offset_std=0.0)
    arg = _assert_matches_reference(case)
    assert (arg[:, :, 0, 0] == -1).all() and (arg >= 0).any()


# ------------------------------------------------------------------- zero and integer offsets

POOLS = [  # (kernel, stride, padding, dilation), all valid for F.max_pool2d
    (3, 2, 1, 1), (3, 1, 1, 1), (2, 2, 0, 1), (3, 1, 1, 2), (5, 2, 2, 2), ((3, 2), (2, 1),
                                                                          (1, 0), (1, 2)),
]


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("kernel,stride,pad,dil", POOLS)
def test_zero_offsets_equal_max_pool2d(kernel, stride, pad, dil, dtype):
    """Padding taps sit at integer rows <= -1 or >= H, so they are skipped: exactly max_pool2d,
    values and input gradient (random values have no ties)."""
    x = torch.randn(2, 3, 9, 10, dtype=dtype, requires_grad=True)
    want = F.max_pool2d(x, kernel, stride, pad, dil)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    offset = torch.zeros(2, 2 * kh * kw, *want.shape[2:], dtype=dtype, requires_grad=True)
    got = deform_max_pool2d(x, offset, kernel, stride, pad, dil)
    assert torch.equal(got, want)
    g = torch.randn_like(want)
    (g_want,) = torch.autograd.grad(want, [x], g)
    g_got, g_off = torch.autograd.grad(got, [x, offset], g)
    assert torch.equal(g_got, g_want)
    assert g_off.abs().sum() > 0  # the winning taps' offsets do learn from zero


def test_integer_offsets_read_single_pixels():
    """Integer offsets: each kept tap reads exactly one pixel, so the output is the max of
    plain indexing (computed here without any bilinear code)."""
    n, c, h, w = 2, 3, 6, 7
    x = torch.randn(n, c, h, w, dtype=F64)
    offset = torch.randint(-3, 4, (n, 18, h, w)).to(F64)
    got = deform_max_pool2d(x, offset, 3, 1, 1)
    want = torch.zeros(n, c, h, w, dtype=F64)
    for b in range(n):
        for i in range(h):
            for j in range(w):
                vals = []
                for k in range(9):
                    y = i - 1 + k // 3 + int(offset[b, 2 * k, i, j])
                    xx = j - 1 + k % 3 + int(offset[b, 2 * k + 1, i, j])
                    if 0 <= y < h and 0 <= xx < w:
                        vals.append(x[b, :, y, xx])
                if vals:
                    want[b, :, i, j] = torch.stack(vals).max(0).values
    assert torch.equal(got, want)
    _assert_matches_reference(dict(input=x, offset=offset, kernel_size=(3, 3), stride=(1, 1),
                                   padding=(1, 1), dilation=(1, 1)))


# ------------------------------------------------------------------------ the border, by hand

def _pool_points(img, ys, xs, pad_w=0):
    """A 1x1 pool with stride (H, 1) and padding (0, pad_w): one output row whose output ``j``
    (base point (0, j - pad_w)) samples ``img`` at ``(ys[j], xs[j])`` through its offset.

    Returns the outputs ``(W + 2*pad_w,)``, the gradient of their sum by the image ``(H, W)``
    and by the offsets ``(2, W + 2*pad_w)`` (dy row, dx row).
    """
    n_out = img.shape[3] + 2 * pad_w
    assert len(ys) == len(xs) == n_out
    offset = torch.zeros(1, 2, 1, n_out, dtype=F64)
    offset[0, 0, 0] = torch.tensor(ys, dtype=F64)
    offset[0, 1, 0] = torch.tensor(xs, dtype=F64) - (torch.arange(n_out, dtype=F64) - pad_w)
    x = img.clone().requires_grad_()
    offset.requires_grad_()
    out = deform_max_pool2d(x, offset, 1, (img.shape[2], 1), (0, pad_w))
    assert out.shape == (1, 1, 1, n_out)
    g_x, g_off = torch.autograd.grad(out.sum(), [x, offset])
    return out.detach()[0, 0, 0], g_x[0, 0], g_off[0, :, 0]


def _tensor(values):
    return torch.tensor([float(v) for v in values], dtype=F64)


def test_hand_computed_border_rows():
    """Rows -1, -0.5, 0, 1.5, H-1, H-0.5, H and below -1 on a 4x8 image (x on integer columns):
    skipped at -1 and from H on, clamped in (-1, 0) and (H-1, H), one-sided derivatives."""
    h, w = 4, 8
    img = torch.arange(h * w, dtype=F64).view(1, 1, h, w) ** 1.5 / 10
    r = img[0, 0]
    ys = [-1.0, -0.5, 0.0, 1.5, 3.0, 3.5, 4.0, -1.25]
    xs = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    out, g_x, g_off = _pool_points(img, ys, xs)
    torch.testing.assert_close(out, _tensor([0, r[0, 1], r[0, 2], (r[1, 3] + r[2, 3]) / 2,
                                             r[3, 4], r[3, 5], 0, 0]))
    torch.testing.assert_close(g_off[0], _tensor([0, 0, r[1, 2] - r[0, 2], r[2, 3] - r[1, 3],
                                                  0, 0, 0, 0]))
    # dx at integer columns: the floor-based right difference.
    torch.testing.assert_close(g_off[1], _tensor([
        0, r[0, 2] - r[0, 1], r[0, 3] - r[0, 2], (r[1, 4] + r[2, 4] - r[1, 3] - r[2, 3]) / 2,
        r[3, 5] - r[3, 4], r[3, 6] - r[3, 5], 0, 0]))
    want_gx = torch.zeros(h, w, dtype=F64)
    for (yy, xx), wt in (((0, 1), 1.0), ((0, 2), 1.0), ((1, 3), 0.5), ((2, 3), 0.5),
                         ((3, 4), 1.0), ((3, 5), 1.0)):
        want_gx[yy, xx] += wt
    torch.testing.assert_close(g_x, want_gx)


def test_hand_computed_border_columns():
    """The same rule on the x axis of an 8x4 image: -1 and W skipped, (-1, 0) and (W-1, W)
    clamped with dx 0, column 0 and fractional columns with their right differences."""
    h, w = 8, 4
    img = torch.randn(1, 1, h, w, dtype=F64)
    r = img[0, 0]
    xs = [-1.0, -0.5, 0.0, 3.0, 3.5, 4.0, 2.5, -3.0]
    ys = [float(i) for i in range(8)]
    out, g_x, g_off = _pool_points(img, ys, xs, pad_w=2)
    torch.testing.assert_close(out, _tensor([0, r[1, 0], r[2, 0], r[3, 3], r[4, 3], 0,
                                             (r[6, 2] + r[6, 3]) / 2, 0]))
    torch.testing.assert_close(g_off[1], _tensor([0, 0, r[2, 1] - r[2, 0], 0, 0, 0,
                                                  r[6, 3] - r[6, 2], 0]))
    # dy at integer rows: right differences; row H-1 = 7 is not among the kept samples.
    torch.testing.assert_close(g_off[0], _tensor([
        0, r[2, 0] - r[1, 0], r[3, 0] - r[2, 0], r[4, 3] - r[3, 3], r[5, 3] - r[4, 3], 0,
        (r[7, 2] + r[7, 3] - r[6, 2] - r[6, 3]) / 2, 0]))
    assert g_x.sum() == pytest.approx(5.0)  # five kept samples, each spreads weight 1


@pytest.mark.parametrize("og", [1, 2])
def test_samples_exactly_on_border_rows_match_reference(og):
    """Every tap on -1.5, -1, -0.5, -0.25, 0, 0.5, 1, H-2, H-1.5, H-1, H-0.5, H, H+0.5 in y and
    x independently: values, argmax and the gradients at the kinks equal the reference's."""
    n, c, h, w = 2, 4, 5, 6
    h_out, w_out = 5, 6
    u = (torch.arange(9) // 3).view(1, 1, 9, 1, 1)
    v = (torch.arange(9) % 3).view(1, 1, 9, 1, 1)
    base_y = torch.arange(h_out).view(1, 1, 1, h_out, 1) - 1 + u
    base_x = torch.arange(w_out).view(1, 1, 1, 1, w_out) - 1 + v

    def points(size):
        return torch.tensor([-1.5, -1, -0.5, -0.25, 0, 0.5, 1, size - 2, size - 1.5, size - 1,
                             size - 0.5, size, size + 0.5], dtype=F64)

    shape = (n, og, 9, h_out, w_out)
    ys, xs = points(h), points(w)
    dy = ys[torch.randint(0, len(ys), shape)] - base_y
    dx = xs[torch.randint(0, len(xs), shape)] - base_x
    dy[:, :, :, 0, 0] = h - base_y[:, :, :, 0, 0]  # every tap of output (0, 0) on row H
    offset = torch.stack([dy, dx], dim=3).reshape(n, 2 * og * 9, h_out, w_out)
    case = dict(input=torch.randn(n, c, h, w, dtype=F64), offset=offset, kernel_size=(3, 3),
                stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    arg = _assert_matches_reference(case)
    assert (arg[:, :, 0, 0] == -1).all() and (arg >= 0).any()


def test_all_taps_skipped_give_zero_and_no_gradient():
    x = torch.randn(1, 2, 4, 5, dtype=F64, requires_grad=True)
    offset = torch.full((1, 18, 4, 5), 10.0, dtype=F64)  # every tap lands at y, x >= H, W
    offset[:, ::4] = -20.0  # some taps far above / left instead
    offset.requires_grad_()
    out = deform_max_pool2d(x, offset, 3, 1, 1)
    assert torch.equal(out, torch.zeros_like(out))
    _, arg = torch.ops.dcn_det.deform_max_pool2d(x.detach(), offset.detach(), 3, 3, 1, 1, 1, 1,
                                                 1, 1, 1)
    assert (arg == -1).all()
    g_x, g_off = torch.autograd.grad(out.sum(), [x, offset])
    assert g_x.abs().sum() == 0 and g_off.abs().sum() == 0


def test_nan_offsets_are_skipped_and_nan_values_win():
    x = torch.randn(1, 1, 6, 6, dtype=F64)
    offset = torch.zeros(1, 18, 6, 6, dtype=F64)
    offset[0, 0] = float("nan")  # tap 0's dy
    x_nan = x.clone()
    x_nan[0, 0, 2, 2] = float("nan")
    for inp in (x, x_nan):
        ours = deform_max_pool2d(inp, offset, 3, 1, 1)
        ref, ref_arg = deform_max_pool2d_ref(inp, offset, 3, 1, 1)
        _, arg = torch.ops.dcn_det.deform_max_pool2d(inp, offset, 3, 3, 1, 1, 1, 1, 1, 1, 1)
        torch.testing.assert_close(ours, ref, equal_nan=True)
        assert torch.equal(arg, ref_arg) and not (arg == 0).any()
    # The NaN pixel wins the windows that read it (also through a corner of weight 0, as in
    # grid_sample: 0 * NaN is NaN); the others stay numbers.
    out = deform_max_pool2d(x_nan, offset, 3, 1, 1)[0, 0]
    # The samples that read pixel (2, 2) sit at (1..2, 1..2); windows from row/column 4 on
    # hold none of them, and output (3, 3) holds (2, 2) only as tap 0, which is skipped.
    want_nan = torch.zeros(6, 6, dtype=torch.bool)
    want_nan[:4, :4] = True
    want_nan[3, 3] = False
    assert torch.equal(torch.isnan(out), want_nan)


# ----------------------------------------------------------------------------------- ties

def test_constant_input_first_kept_tap_wins():
    """Equal values everywhere: the first tap in tap order that is not skipped wins, and the
    whole gradient of an output goes to that tap's pixel."""
    n, c, h, w = 1, 2, 5, 6
    x = torch.full((n, c, h, w), 1.5, dtype=F64, requires_grad=True)
    offset = torch.randint(-1, 2, (n, 18, h, w)).to(F64)  # integer: values stay exactly 1.5
    out = deform_max_pool2d(x, offset, 3, 1, 1)
    _, arg = torch.ops.dcn_det.deform_max_pool2d(x.detach(), offset, 3, 3, 1, 1, 1, 1, 1, 1, 1)
    grad_out = torch.rand(n, c, h, w, dtype=F64)
    (g_x,) = torch.autograd.grad(out, [x], grad_out)
    want_g = torch.zeros(n, c, h, w, dtype=F64)
    for i in range(h):
        for j in range(w):
            first = None
            for k in range(9):
                y = i - 1 + k // 3 + int(offset[0, 2 * k, i, j])
                xx = j - 1 + k % 3 + int(offset[0, 2 * k + 1, i, j])
                if 0 <= y < h and 0 <= xx < w:
                    first = (k, y, xx)
                    break
            if first is None:
                assert (arg[0, :, i, j] == -1).all() and (out[0, :, i, j] == 0).all()
                continue
            assert (arg[0, :, i, j] == first[0]).all() and (out[0, :, i, j] == 1.5).all()
            want_g[0, :, first[1], first[2]] += grad_out[0, :, i, j]
    torch.testing.assert_close(g_x, want_g)


def test_tied_taps_only_the_first_gets_offset_gradient():
    """All nine taps moved onto the centre pixel: an exact nine-way tie on a non-constant
    image. Tap 0 wins; its (dy, dx) get the right differences, the others nothing."""
    h, w = 5, 6
    x = (torch.arange(h * w, dtype=F64).view(1, 1, h, w) ** 1.3).requires_grad_()
    k = torch.arange(9)
    to_centre = torch.stack([1 - k // 3, 1 - k % 3], dim=1).reshape(18).to(F64)
    offset = to_centre.view(1, 18, 1, 1).expand(1, 18, h, w).clone().requires_grad_()
    out = deform_max_pool2d(x, offset, 3, 1, 1)
    torch.testing.assert_close(out, x.detach())
    g_x, g_off = torch.autograd.grad(out.sum(), [x, offset])
    torch.testing.assert_close(g_x, torch.ones_like(x))
    r = x.detach()[0, 0]
    want_dy = torch.zeros(h, w, dtype=F64)
    want_dy[:-1] = r[1:] - r[:-1]  # last row: clamped end, derivative 0
    want_dx = torch.zeros(h, w, dtype=F64)
    want_dx[:, :-1] = r[:, 1:] - r[:, :-1]
    torch.testing.assert_close(g_off[0, 0], want_dy)
    torch.testing.assert_close(g_off[0, 1], want_dx)
    assert g_off[0, 2:].abs().sum() == 0
    _assert_matches_reference(dict(input=x.detach().clone(), offset=offset.detach().clone(),
                                   kernel_size=(3, 3), stride=(1, 1), padding=(1, 1),
                                   dilation=(1, 1)))


# ------------------------------------------------------------------------ gradients, tracing

@pytest.mark.parametrize("og,stride", [(1, 1), (2, 2)])
def test_gradcheck(og, stride):
    case = make_case(n=1, c=2, h=5, w=6, stride=(stride, stride), og=og, avoid_kinks=True,
                     offset_std=1.5)
    x, off = case["input"].requires_grad_(), case["offset"].requires_grad_()
    rest = {k: v for k, v in case.items() if k not in ("input", "offset")}
    assert torch.autograd.gradcheck(lambda a, b: deform_max_pool2d(a, b, **rest), [x, off],
                                    eps=1e-6, atol=1e-6)


@pytest.mark.slow  # torch.library.opcheck: fake tensors, autograd and AOT dispatch checks
def test_opcheck():
    case = make_case(n=1, c=4, h=6, w=5, og=2, stride=(2, 1), dtype=torch.float32)
    x, off = case["input"].requires_grad_(), case["offset"].requires_grad_()
    args = (x, off, *_geometry(case))
    torch.library.opcheck(torch.ops.dcn_det.deform_max_pool2d.default, args)
    out, arg = torch.ops.dcn_det.deform_max_pool2d(x.detach(), off.detach(), *_geometry(case))
    torch.library.opcheck(torch.ops.dcn_det._deform_max_pool2d_backward.default,
                          (torch.randn_like(out), x.detach(), off.detach(), arg,
                           *_geometry(case)))


def _random_module(channels=4, og=2, stride=2):
    torch.manual_seed(3)
    module = DeformMaxPool2d(channels, 3, stride=stride, padding=1, offset_groups=og)
    nn.init.normal_(module.conv_offset.weight, std=0.5)
    nn.init.normal_(module.conv_offset.bias, std=1.0)
    return module


@pytest.mark.slow  # torch.compile
def test_torch_compile_fullgraph_aot_eager():
    """backend="aot_eager": traces through the fake kernels and the autograd formula."""
    torch._dynamo.reset()
    module = _random_module()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 4, 9, 11, requires_grad=True)
    out_eager = module(x)
    g_eager = torch.autograd.grad(out_eager.sum(), [x, module.conv_offset.weight])
    out = compiled(x)
    g = torch.autograd.grad(out.sum(), [x, module.conv_offset.weight])
    torch.testing.assert_close(out, out_eager)
    for a, b in zip(g, g_eager):
        torch.testing.assert_close(a, b)


def test_torch_export_with_dynamic_sizes():
    module = _random_module().eval()
    x = torch.randn(2, 4, 12, 14)
    dims = {"x": {2: torch.export.Dim("h", min=4, max=64), 3: torch.export.Dim("w", min=4,
                                                                                max=64)}}

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = module

        def forward(self, x):
            return self.pool(x)

    program = torch.export.export(Wrapper(), (x,), dynamic_shapes=dims)
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "dcn_det.deform_max_pool2d.default" in targets
    for shape in ((2, 4, 12, 14), (2, 4, 9, 20)):
        xi = torch.randn(*shape)
        torch.testing.assert_close(program.module()(xi), module(xi))


class _OpAsModule(nn.Module):
    """The functional op with fixed geometry, so an export takes (input, offset)."""

    def forward(self, x, offset):
        return deform_max_pool2d(x, offset, 3, 2, 1)


@pytest.mark.slow  # ONNX export
def test_onnx_export_uses_standard_operators_and_matches_onnxruntime(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from dcn_det.export import _onnx_translation_table

    path = str(tmp_path / "dmp.onnx")
    x = torch.randn(2, 4, 9, 11)
    offset = torch.randn(2, 36, 5, 6) * 2
    dims = {"x": {2: torch.export.Dim("h", min=4, max=64), 3: torch.export.Dim("w", min=4,
                                                                                max=64)},
            "offset": {2: torch.export.Dim.AUTO, 3: torch.export.Dim.AUTO}}
    torch.onnx.export(_OpAsModule().eval(), (x, offset), path, dynamo=True, opset_version=19,
                      input_names=["x", "offset"], dynamic_shapes=dims,
                      custom_translation_table=_onnx_translation_table())
    graph = onnx.load(path).graph
    ops = {(node.domain or "ai.onnx", node.op_type) for node in graph.node}
    assert all(domain == "ai.onnx" for domain, _ in ops), ops
    assert ("ai.onnx", "GridSample") in ops
    sess = ort.InferenceSession(path)
    for shape in ((2, 4, 9, 11), (2, 4, 16, 7)):
        xi = torch.randn(*shape)
        h_out, w_out = _out(shape[2], 3, 2, 1, 1), _out(shape[3], 3, 2, 1, 1)
        oi = torch.randn(shape[0], 36, h_out, w_out) * 2
        oi[:, :, 0, 0] = 50.0  # every tap of output (0, 0) skipped: 0
        # Tap 0 of output row 1 (base row 1) exactly on row -1 (skipped), at (1, 0) on row 0.
        oi[:, 0, 1, :] = -2.0
        oi[:, 0, 1, 0] = -1.0
        oi[:, 1, 1, :] = 0.0
        got = sess.run(None, {"x": xi.numpy(), "offset": oi.numpy()})[0]
        want = deform_max_pool2d(xi, oi, 3, 2, 1)
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-5, atol=1e-5)
        assert (want[:, :, 0, 0] == 0).all()
    zero = torch.zeros(2, 36, 5, 6)
    got = sess.run(None, {"x": x.numpy(), "offset": zero.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(got), F.max_pool2d(x, 3, 2, 1), rtol=0, atol=0)


# ----------------------------------------------------------------------- dtypes, empty sizes

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_input_computes_in_float32(dtype):
    case = make_case(n=1, dtype=torch.float32, offset_std=1.0)
    x, off = case["input"].to(dtype).requires_grad_(), case["offset"].to(dtype).requires_grad_()
    rest = {k: v for k, v in case.items() if k not in ("input", "offset")}
    out = deform_max_pool2d(x, off, **rest)
    assert out.dtype == dtype
    ref, _ = deform_max_pool2d_ref(x.float(), off.float(), **rest)
    torch.testing.assert_close(out, ref.to(dtype))
    out.float().sum().backward()
    assert off.grad.dtype == dtype and torch.isfinite(off.grad.float()).all()


def test_autocast_cpu_runs_in_float32():
    x = torch.randn(1, 4, 6, 6).bfloat16()
    offset = torch.randn(1, 18, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = deform_max_pool2d(x, offset, 3, 1, 1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, deform_max_pool2d(x.float(), offset, 3, 1, 1))


def test_zero_size_batch_and_empty_image():
    x = torch.randn(0, 3, 5, 5, dtype=F64, requires_grad=True)
    offset = torch.randn(0, 18, 5, 5, dtype=F64, requires_grad=True)
    out = deform_max_pool2d(x, offset, 3, 1, 1)
    assert out.shape == (0, 3, 5, 5)
    g_x, g_off = torch.autograd.grad(out.sum(), [x, offset])
    assert g_x.shape == x.shape and g_off.shape == offset.shape
    # H = 0 with padding still has outputs; every tap is skipped.
    x = torch.randn(1, 2, 0, 4, dtype=F64, requires_grad=True)
    offset = torch.randn(1, 2, 2, 6, dtype=F64, requires_grad=True)
    out = deform_max_pool2d(x, offset, 1, 1, 1)
    assert torch.equal(out, torch.zeros(1, 2, 2, 6, dtype=F64))
    g_x, g_off = torch.autograd.grad(out.sum(), [x, offset])
    assert g_x.shape == x.shape and g_off.abs().sum() == 0


# --------------------------------------------------------------------------------- errors

def _bad(**changes):
    case = make_case(n=1, c=4, h=6, w=6, og=2, dtype=torch.float32)
    case.update(changes)
    return case


BAD_INPUTS = {
    "input_rank": (dict(input=torch.randn(4, 6, 6)), ["input", "(4, 6, 6)", "(N, C, H, W)"]),
    "offset_rank": (dict(offset=torch.randn(36, 6, 6)), ["offset", "(36, 6, 6)"]),
    "offset_channels": (dict(offset=torch.randn(1, 17, 6, 6)), ["offset.size(1)", "18", "17"]),
    "offset_spatial": (dict(offset=torch.randn(1, 36, 5, 6)), ["offset", "(1, 36, 6, 6)",
                                                               "(1, 36, 5, 6)"]),
    "offset_batch": (dict(offset=torch.randn(2, 36, 6, 6)), ["offset", "(1, 36, 6, 6)",
                                                             "(2, 36, 6, 6)"]),
    "offset_groups_indivisible": (dict(offset=torch.randn(1, 54, 6, 6)),
                                  ["offset groups 3", "C=4"]),
    "dtype_mismatch": (dict(offset=torch.randn(1, 36, 6, 6, dtype=F64)), ["offset", "float64",
                                                                         "float32"]),
    "device_mismatch": (dict(offset=torch.randn(1, 36, 6, 6, device="meta")), ["offset", "meta",
                                                                              "cpu"]),
    "integer_input": (dict(input=torch.ones(1, 4, 6, 6, dtype=torch.int64)), ["input", "int64"]),
    "bad_kernel": (dict(kernel_size=0), ["kernel_size", "(0, 0)"]),
    "bad_stride": (dict(stride=0), ["stride", "(0, 0)"]),
    "bad_padding": (dict(padding=-1), ["padding", "(-1, -1)"]),
    "kernel_not_int": (dict(kernel_size=2.5), ["kernel_size", "2.5"]),
    "too_small": (dict(padding=0, input=torch.randn(1, 4, 2, 2)), ["input", "(1, 4, 2, 2)",
                                                                   "too small"]),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_messages(name):
    changes, words = BAD_INPUTS[name]
    with pytest.raises(ValueError) as info:
        deform_max_pool2d(**_bad(**changes))
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_native_op_checks_shapes_without_the_wrapper():
    case = _bad()
    geometry = _geometry(case)
    with pytest.raises(RuntimeError, match=r"offset must be \[1, 36, 6, 6\]"):
        torch.ops.dcn_det.deform_max_pool2d(case["input"], torch.randn(1, 36, 5, 6), *geometry)
    with pytest.raises(RuntimeError, match="offset_groups=3"):
        torch.ops.dcn_det.deform_max_pool2d(case["input"], case["offset"], *geometry[:-1], 3)
    with pytest.raises(RuntimeError, match="too small"):
        torch.ops.dcn_det.deform_max_pool2d(torch.randn(1, 4, 2, 6), torch.randn(1, 36, 1, 2),
                                            3, 3, 2, 2, 0, 0, 1, 1, 2)
    out, arg = torch.ops.dcn_det.deform_max_pool2d(case["input"], case["offset"], *geometry)
    bwd = torch.ops.dcn_det._deform_max_pool2d_backward
    with pytest.raises(RuntimeError, match="grad_output must be"):
        bwd(torch.randn(1, 4, 6, 5), case["input"], case["offset"], arg, *geometry)
    with pytest.raises(RuntimeError, match="argmax must be a CPU int64"):
        bwd(out, case["input"], case["offset"], arg.int(), *geometry)
    with pytest.raises(RuntimeError, match=r"argmax values must lie in \[-1, 8\]"):
        bwd(out, case["input"], case["offset"], arg + 9, *geometry)


# --------------------------------------------------------------------------------- module

def test_module_starts_as_max_pool():
    x = torch.randn(2, 8, 11, 12)
    m = DeformMaxPool2d(8, 3, stride=2, padding=1, offset_groups=4, offset_lr_mult=0.1)
    assert torch.equal(m(x), F.max_pool2d(x, 3, 2, 1))
    assert m.conv_offset.out_channels == 2 * 4 * 9 and m.conv_offset.lr_mult == 0.1
    assert m.conv_offset.weight.abs().sum() == 0 and m.conv_offset.bias.abs().sum() == 0
    assert "offset_groups=4" in repr(m) and "offset_lr_mult=0.1" in repr(m)
    m2 = DeformMaxPool2d(3, (2, 3), stride=(2, 1), padding=(1, 1), dilation=(1, 2))
    assert torch.equal(m2(x[:, :3]), F.max_pool2d(x[:, :3], (2, 3), (2, 1), (1, 1), (1, 2)))
    assert m2.conv_offset.lr_mult == 1.0 and "offset_lr_mult" not in repr(m2)


def test_module_offsets_receive_gradients():
    m = DeformMaxPool2d(2, 3, stride=2, padding=1)
    m(torch.randn(1, 2, 8, 8)).square().sum().backward()
    assert m.conv_offset.weight.grad.abs().sum() > 0 and m.conv_offset.bias.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(channels=0), "channels must be a positive int"),
    (dict(channels=6, offset_groups=4), "channels=6 must be divisible by offset_groups=4"),
    (dict(offset_groups=True), "offset_groups must be a positive int"),
])
def test_module_bad_arguments(kwargs, pattern):
    args = dict(channels=4, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        DeformMaxPool2d(**args)
