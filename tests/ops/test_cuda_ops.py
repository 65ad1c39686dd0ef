"""CUDA kernels against the CPU kernels, gradcheck on CUDA, determinism and torchvision.

Skipped entirely on machines without a CUDA device (CI); run on a GPU machine.
"""
import pytest
import torch

from dcn_det.ops import (batched_nms, deform_conv2d, deform_max_pool2d, deform_psroi_pool, nms,
                         roi_align)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# (rtol, atol) of CUDA vs CPU by dtype; half types compare against a float32 CPU result.
TOL = {torch.float64: (1e-9, 1e-9), torch.float32: (1e-4, 1e-4),
       torch.float16: (2e-2, 2e-2), torch.bfloat16: (5e-2, 8e-2)}


def _conv_case(dtype, n=2, cin=8, cout=6, h=9, w=11, k=3, stride=1, pad=1, dil=1, groups=2,
               og=2, mask=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    ho = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dil * (k - 1) - 1) // stride + 1
    x = torch.randn(n, cin, h, w, generator=g, dtype=torch.float64)
    wt = torch.randn(cout, cin // groups, k, k, generator=g, dtype=torch.float64) * 0.2
    off = torch.randn(n, 2 * og * k * k, ho, wo, generator=g, dtype=torch.float64) * 2.0
    m = torch.rand(n, og * k * k, ho, wo, generator=g, dtype=torch.float64) if mask else None
    b = torch.randn(cout, generator=g, dtype=torch.float64)
    args = dict(stride=stride, padding=pad, dilation=dil)
    cast = (lambda t: None if t is None else t.to(dtype))
    return [cast(t) for t in (x, off, wt, b, m)], args


def _run_conv(tensors, args, device, grad=True):
    x, off, wt, b, m = [None if t is None else t.detach().to(device).requires_grad_(grad)
                        for t in tensors]
    out = deform_conv2d(x, off, wt, b, mask=m, **args)
    if not grad:
        return out, []
    go = torch.ones_like(out) * 0.5 + torch.linspace(0, 1, out.numel(), device=device,
                                                      dtype=out.dtype).view_as(out)
    out.backward(go)
    return out, [t.grad for t in (x, off, wt, b, m) if t is not None]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cfg", [dict(), dict(stride=2, pad=2, dil=2), dict(mask=False, groups=1, og=1),
                                 dict(n=0), dict(k=1, pad=0, og=4, cin=8)])
def test_deform_conv2d_cuda_matches_cpu(dtype, cfg):
    tensors, args = _conv_case(dtype, **cfg)
    out_c, g_c = _run_conv(tensors, args, "cpu")
    out_g, g_g = _run_conv(tensors, args, "cuda")
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(out_g.cpu(), out_c, rtol=rtol, atol=atol)
    for a, b in zip(g_g, g_c):
        torch.testing.assert_close(a.cpu(), b, rtol=rtol * 10, atol=atol * 10)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_deform_conv2d_cuda_half(dtype):
    """Half inputs on CUDA (no autocast) against float32 CPU on the same rounded inputs, so
    only the kernel's own rounding (half columns, float32 accumulation) is measured."""
    tensors, args = _conv_case(torch.float32)
    half = [None if t is None else t.to(dtype) for t in tensors]
    out_ref, g_ref = _run_conv([None if t is None else t.float() for t in half], args, "cpu")
    out_h, g_h = _run_conv(half, args, "cuda")
    assert out_h.dtype == dtype
    rtol, atol = TOL[dtype]
    scale = out_ref.abs().max().item()
    torch.testing.assert_close(out_h.float().cpu(), out_ref, rtol=rtol, atol=atol * scale)
    for a, b in zip(g_h, g_ref):
        torch.testing.assert_close(a.float().cpu(), b, rtol=rtol * 5,
                                   atol=atol * 5 * max(b.abs().max().item(), 1.0))


def test_deform_conv2d_cuda_gradcheck():
    tensors, args = _conv_case(torch.float64, n=1, cin=4, cout=2, h=5, w=6, groups=1, og=2)
    x, off, wt, b, m = [t.cuda().requires_grad_() for t in tensors]
    # offsets away from integers so no sample sits on a bilinear kink
    with torch.no_grad():
        off.copy_(off.round() + 0.3)
    assert torch.autograd.gradcheck(
        lambda *a: deform_conv2d(a[0], a[1], a[2], a[3], mask=a[4], **args),
        (x, off, wt, b, m), nondet_tol=1e-7)


def _pool_case(dtype, r=12, n=2, output_dim=6, group=3, pooled=3, part=3, spp=2, c_off=2,
               h=14, w=17, seed=0, with_offset=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, output_dim * group * group, h, w, generator=g, dtype=torch.float64)
    x1 = torch.rand(r, generator=g, dtype=torch.float64) * w * 16 - 40
    y1 = torch.rand(r, generator=g, dtype=torch.float64) * h * 16 - 40
    bw = torch.rand(r, generator=g, dtype=torch.float64) * 200 + 0.3
    bh = torch.rand(r, generator=g, dtype=torch.float64) * 200 + 0.3
    bi = torch.randint(0, n, (r,), generator=g).double()
    rois = torch.stack([bi, x1, y1, x1 + bw, y1 + bh], 1)
    off = torch.randn(r, 2 * c_off, part, part, generator=g, dtype=torch.float64) * 2.0 \
        if with_offset else None
    cast = (lambda t: None if t is None else t.to(dtype))
    kw = dict(spatial_scale=1 / 16, output_dim=output_dim, group_size=group, pooled_size=pooled,
              part_size=part, sample_per_part=spp, trans_std=0.1)
    return cast(x), cast(rois), cast(off), kw


def _run_pool(x, rois, off, kw, device):
    x = x.detach().to(device).requires_grad_()
    rois = rois.to(device)
    off = None if off is None else off.detach().to(device).requires_grad_()
    out = deform_psroi_pool(x, rois, off, **kw)
    out.backward(torch.linspace(-1, 1, out.numel(), device=device, dtype=out.dtype).view_as(out))
    return out, [x.grad] + ([] if off is None else [off.grad])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cfg", [dict(), dict(group=1, pooled=4, part=2, c_off=1, spp=4),
                                 dict(with_offset=False), dict(r=0)])
def test_deform_psroi_pool_cuda_matches_cpu(dtype, cfg):
    x, rois, off, kw = _pool_case(dtype, **cfg)
    out_c, g_c = _run_pool(x, rois, off, kw, "cpu")
    out_g, g_g = _run_pool(x, rois, off, kw, "cuda")
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(out_g.cpu(), out_c, rtol=rtol, atol=atol)
    for a, b in zip(g_g, g_c):
        torch.testing.assert_close(a.cpu(), b, rtol=rtol * 10, atol=atol * 10)


def test_deform_psroi_pool_cuda_half():
    x, rois, off, kw = _pool_case(torch.float32)
    xh = x.half().cuda().requires_grad_()
    out_h = deform_psroi_pool(xh, rois.cuda().half(), off.half().cuda(), **kw)
    # half rois lose precision on large coordinates: the CPU run uses the same rounded values
    out_c = deform_psroi_pool(x.half().float(), rois.half().float(), off.half().float(), **kw)
    torch.testing.assert_close(out_h.float().cpu(), out_c, rtol=2e-2, atol=2e-2)
    out_h.sum().backward()
    assert torch.isfinite(xh.grad.float()).all()


def test_deform_psroi_pool_cuda_gradcheck():
    x, rois, off, kw = _pool_case(torch.float64, r=3, output_dim=2, group=2, pooled=2, part=2,
                                  c_off=1, h=8, w=9)
    rois = torch.tensor([[0, 10.0, 12.0, 90.0, 100.0], [1, 30.0, 5.0, 70.0, 60.0],
                         [0, 3.0, 40.0, 120.0, 110.0]], dtype=torch.float64)
    off = (torch.randn(3, 2, 2, 2, dtype=torch.float64) * 0.3)
    xc = x.cuda().requires_grad_()
    oc = off.cuda().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, o: deform_psroi_pool(a, rois.cuda(), o, **kw),
                                    (xc, oc), nondet_tol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling", [-1, 2])
def test_roi_align_cuda_matches_cpu(dtype, aligned, sampling):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 13, 16, generator=g, dtype=dtype)
    xy = torch.rand(20, 2, generator=g, dtype=dtype) * 200 - 20
    wh = torch.rand(20, 2, generator=g, dtype=dtype) * 120
    rois = torch.cat([torch.randint(0, 2, (20, 1), generator=g).to(dtype), xy, xy + wh], 1)
    outs, grads = [], []
    for dev in ("cpu", "cuda"):
        xi = x.detach().to(dev).requires_grad_()
        out = roi_align(xi, rois.to(dev), (7, 6), 1 / 16, sampling, aligned)
        out.backward(torch.ones_like(out))
        outs.append(out.cpu())
        grads.append(xi.grad.cpu())
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(outs[1], outs[0], rtol=rtol, atol=atol)
    torch.testing.assert_close(grads[1], grads[0], rtol=rtol * 10, atol=atol * 10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("cfg", [dict(), dict(stride=1, og=1), dict(zero=True)])
def test_deform_max_pool2d_cuda_composite_matches_cpu(dtype, cfg):
    """CUDA runs the grid_sample composite: same output, argmax and gradients as the CPU."""
    g = torch.Generator().manual_seed(3)
    stride, og = cfg.get("stride", 2), cfg.get("og", 2)
    x = torch.randn(2, 4, 11, 13, generator=g, dtype=dtype)
    ho, wo = (11 - 1) // stride + 1, (13 - 1) // stride + 1
    off = torch.randn(2, 2 * og * 9, ho, wo, generator=g, dtype=dtype) * 2
    if cfg.get("zero"):
        off.zero_()
    go = torch.randn(2, 4, ho, wo, generator=g, dtype=dtype)
    results = []
    for dev in ("cpu", "cuda"):
        xi, oi = x.to(dev).requires_grad_(), off.to(dev).requires_grad_()
        out = deform_max_pool2d(xi, oi, 3, stride, 1)
        out.backward(go.to(dev))
        _, arg = torch.ops.dcn_det.deform_max_pool2d(xi.detach(), oi.detach(), 3, 3, stride,
                                                     stride, 1, 1, 1, 1, og)
        results.append([t.cpu() for t in (out, arg, xi.grad, oi.grad)])
    (out_c, arg_c, gx_c, go_c), (out_g, arg_g, gx_g, go_g) = results
    rtol, atol = TOL[dtype]
    assert torch.equal(arg_g, arg_c)
    for a, b in ((out_g, out_c), (gx_g, gx_c), (go_g, go_c)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    if cfg.get("zero"):
        assert torch.equal(out_g, torch.nn.functional.max_pool2d(x, 3, stride, 1))


@pytest.mark.parametrize("thresh", [0.3, 0.5, 0.7])
def test_nms_cuda_matches_cpu(thresh):
    g = torch.Generator().manual_seed(2)
    xy = torch.rand(1000, 2, generator=g) * 500
    boxes = torch.cat([xy, xy + torch.rand(1000, 2, generator=g) * 100 + 1], 1)
    scores = torch.randperm(1000, generator=g).float() / 1000  # no ties
    keep_c = nms(boxes, scores, thresh)
    keep_g = nms(boxes.cuda(), scores.cuda(), thresh)
    assert torch.equal(keep_g.cpu(), keep_c)
    idxs = torch.randint(0, 5, (1000,), generator=g)
    assert torch.equal(batched_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), thresh).cpu(),
                       batched_nms(boxes, scores, idxs, thresh))
    assert nms(boxes[:0].cuda(), scores[:0].cuda(), thresh).numel() == 0


def test_backward_alerts_under_deterministic_mode():
    tensors, args = _conv_case(torch.float32, n=1)
    x, off, wt, b, m = [t.cuda().requires_grad_() for t in tensors]
    torch.use_deterministic_algorithms(True)
    try:
        out = deform_conv2d(x, off, wt, b, mask=m, **args)
        with pytest.raises(RuntimeError, match="deterministic"):
            out.sum().backward()
    finally:
        torch.use_deterministic_algorithms(False)


def test_opcheck_cuda():
    tensors, args = _conv_case(torch.float32, n=1)
    x, off, wt, b, m = [t.cuda().requires_grad_() for t in tensors]
    torch.library.opcheck(torch.ops.dcn_det.deform_conv2d.default,
                          (x, wt, off, m, b, 1, 1, 1, 1, 1, 1, 2, 2))
    xp, rois, offp, kw = _pool_case(torch.float32)
    torch.library.opcheck(torch.ops.dcn_det.deform_psroi_pool.default,
                          (xp.cuda().requires_grad_(), rois.cuda(), offp.cuda().requires_grad_(),
                           kw["spatial_scale"], kw["output_dim"], kw["group_size"],
                           kw["pooled_size"], kw["part_size"], kw["sample_per_part"],
                           kw["trans_std"]))


def test_vs_torchvision_cuda(tv_ops):
    tensors, args = _conv_case(torch.float32)
    x, off, wt, b, m = [t.cuda() for t in tensors]
    ours = deform_conv2d(x, off, wt, b, mask=m, **args)
    theirs = tv_ops.deform_conv2d(x, off, wt, b, mask=m, **args)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    xr = torch.randn(2, 4, 20, 20, device="cuda")
    rois = torch.tensor([[0, 1.5, 2.0, 150.0, 90.0], [1, -10.0, 4.0, 60.0, 300.0]], device="cuda")
    for aligned in (False, True):
        torch.testing.assert_close(roi_align(xr, rois, 7, 1 / 8, 2, aligned),
                                   tv_ops.roi_align(xr, rois, 7, 1 / 8, 2, aligned))
    boxes = torch.rand(500, 4, device="cuda") * 100
    boxes[:, 2:] += boxes[:, :2]
    scores = torch.rand(500, device="cuda")
    assert torch.equal(nms(boxes, scores, 0.5), tv_ops.nms(boxes, scores, 0.5))
