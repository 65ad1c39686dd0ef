"""Each ``dcn_det`` operator's ONNX translation, alone, against our op in onnxruntime (float32).

Every model here is exported once (dynamic sizes) and run on several inputs; the files must
contain standard operators only (no custom domain).
"""
import pytest
import torch
from torch import nn

from dcn_det import ops

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.slow  # ONNX export


def _export(module: nn.Module, args, names, dynamic, path) -> "ort.InferenceSession":
    from dcn_det.export import onnx_translation_table

    torch.onnx.export(module.eval(), args, path, dynamo=True, opset_version=19,
                      input_names=names, dynamic_shapes=dynamic,
                      custom_translation_table=onnx_translation_table())
    domains = {node.domain or "ai.onnx" for node in onnx.load(path).graph.node}
    assert domains == {"ai.onnx"}, domains
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _run(sess, *tensors):
    names = [i.name for i in sess.get_inputs()]
    return [torch.from_numpy(o) for o in sess.run(None, {n: t.numpy()
                                                          for n, t in zip(names, tensors)})]


def _dim(name, lo=1, hi=4096):
    return torch.export.Dim(name, min=lo, max=hi)


class _PSRoI(nn.Module):
    """The op with fixed geometry and no offsets: ``forward(x, rois)``."""

    def __init__(self, **kw):
        super().__init__()
        self.kw = kw

    def forward(self, x, rois):
        return torch.ops.dcn_det.deform_psroi_pool(x, rois, None, *self.kw.values())


class _DeformPSRoI(_PSRoI):
    """The op with fixed geometry: ``forward(x, rois, offset)``."""

    def forward(self, x, rois, offset):
        return torch.ops.dcn_det.deform_psroi_pool(x, rois, offset, *self.kw.values())


def _psroi_kwargs(spatial_scale, output_dim, group_size, pooled_size, part_size,
                  sample_per_part, trans_std):
    return dict(spatial_scale=spatial_scale, output_dim=output_dim, group_size=group_size,
                pooled_size=pooled_size, part_size=part_size, sample_per_part=sample_per_part,
                trans_std=trans_std)


def _rois(n_images, h, w, scale, count, gen):
    """RoIs in image pixels: random ones (many partly or wholly outside the map), plus ones
    whose first sample lies exactly on the border -0.5 (x1 = 0 at any scale), whose last lies
    on W-0.5 / H-0.5, tiny ones (roi side clamped to 0.1) and ones with .5 coordinates (the
    rounding rule)."""
    W, H = w / scale, h / scale  # image size covered by the map
    xy = torch.rand(count, 2, generator=gen) * torch.tensor([W * 1.4, H * 1.4]) - \
        torch.tensor([W * 0.2, H * 0.2])
    wh = torch.rand(count, 2, generator=gen) * torch.tensor([W, H]) * 0.8 + 1
    boxes = torch.cat([xy, xy + wh], 1)
    special = torch.tensor([[0.0, 0.0, W - 1, H - 1],      # exactly the whole map
                            [0.0, 0.0, 2.0, 2.0],           # border sample at -0.5
                            [W - 3, H - 3, W - 1, H - 1],   # last sample at W-0.5
                            [5.5, 2.5, 5.5, 2.5],           # ties of round(); tiny roi
                            [-2.5, -0.5, 3.5, 1.5],
                            [W + 5, H + 5, W + 40, H + 40]])  # wholly outside
    boxes = torch.cat([boxes, special.clamp(min=-50)])
    batch = torch.randint(0, n_images, (boxes.shape[0], 1), generator=gen).float()
    return torch.cat([batch, boxes], 1)


# (output_dim, group_size, pooled_size, part_size, sample_per_part, spatial_scale,
#  offset classes or 0 for none): R-FCN's position-sensitive pooling with per-class and
# class-agnostic offsets, plain PS-RoI pooling, the deformable Faster R-CNN's group_size 1,
# and an odd mix (part_size != pooled_size, G not dividing P).
PSROI_CASES = {
    "rfcn_per_class_offsets": (3, 3, 3, 3, 2, 1 / 16, 3),
    "rfcn_agnostic_offsets": (4, 7, 7, 7, 4, 1 / 16, 1),
    "rfcn_plain": (3, 3, 3, 3, 2, 1 / 16, 0),
    "group_size_1_deformable": (8, 1, 7, 7, 4, 1 / 16, 1),
    "group_size_1_plain": (8, 1, 7, 7, 2, 1 / 8, 0),
    "mixed_geometry": (6, 2, 5, 3, 3, 0.5, 2),
}


@pytest.mark.parametrize("case", sorted(PSROI_CASES))
def test_deform_psroi_pool_onnx_matches_op(tmp_path, case):
    out_dim, G, P, part, S, scale, classes = PSROI_CASES[case]
    kw = _psroi_kwargs(scale, out_dim, G, P, part, S, 0.1)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, out_dim * G * G, 9, 11, generator=gen)
    rois = _rois(1, 9, 11, scale, 7, gen)
    args = (x, rois)
    names = ["x", "rois"]
    dynamic = {"x": {0: _dim("n"), 2: _dim("h"), 3: _dim("w")}, "rois": {0: _dim("r", 0)}}
    if classes:
        args += (torch.randn(rois.shape[0], 2 * classes, part, part, generator=gen),)
        names.append("offset")
        dynamic["offset"] = {0: dynamic["rois"][0]}
    module = (_DeformPSRoI if classes else _PSRoI)(**kw)
    sess = _export(module, args, names, {"x": dynamic["x"], "rois": dynamic["rois"],
                                         **({"offset": dynamic["offset"]} if classes else {})},
                   str(tmp_path / "psroi.onnx"))
    # Several sizes and batches; offsets large enough to push samples off the map.
    for n, h, w, count, spread in [(1, 9, 11, 7, 0.3), (2, 5, 17, 12, 3.0), (3, 23, 6, 3, 1.0),
                                   (1, 1, 1, 2, 1.0), (2, 8, 8, 0, 1.0)]:
        x = torch.randn(n, out_dim * G * G, h, w, generator=gen)
        rois = _rois(n, h, w, scale, count, gen)
        inputs = [x, rois]
        if classes:
            offset = torch.randn(rois.shape[0], 2 * classes, part, part, generator=gen) * spread
            if rois.shape[0]:
                offset[0] = 0.0  # the border rois of _rois keep their exact border samples
            inputs.append(offset)
        want_out, want_count = module(*inputs)
        got_out, got_count = _run(sess, *inputs)
        assert got_out.shape == want_out.shape and got_out.dtype == torch.float32
        torch.testing.assert_close(got_count, want_count, rtol=0, atol=0)
        torch.testing.assert_close(got_out, want_out, rtol=1e-5, atol=1e-5)
        if rois.shape[0]:
            assert (want_count > 0).any() and (want_count < S * S).any()  # both cases occur


def test_deform_psroi_pool_onnx_nan_offset_gives_nan(tmp_path):
    kw = _psroi_kwargs(1 / 16, 2, 2, 2, 2, 2, 0.1)
    module = _DeformPSRoI(**kw)
    x = torch.randn(1, 8, 6, 6)
    rois = torch.tensor([[0.0, 0, 0, 40, 40], [0.0, 8, 8, 60, 60]])
    offset = torch.zeros(2, 4, 2, 2)
    offset[0, 0, 1, 1] = float("nan")
    offset[1, 3, 0, 0] = float("inf")
    sess = _export(module, (x, rois, offset), ["x", "rois", "offset"], None,
                   str(tmp_path / "nan.onnx"))
    want_out, want_count = module(x, rois, offset)
    got_out, got_count = _run(sess, x, rois, offset)
    assert want_out.isnan().any()
    torch.testing.assert_close(got_out, want_out, rtol=1e-5, atol=1e-5, equal_nan=True)
    torch.testing.assert_close(got_count, want_count, rtol=0, atol=0)


class _RoIAlign(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.kw = kw

    def forward(self, x, rois):
        return ops.roi_align(x, rois, **self.kw)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_roi_align_onnx_matches_op(tmp_path, aligned, sampling_ratio):
    module = _RoIAlign(output_size=(3, 4), spatial_scale=0.25, sampling_ratio=sampling_ratio,
                       aligned=aligned)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 10, 12, generator=gen)
    rois = _rois(2, 10, 12, 0.25, 6, gen)
    sess = _export(module, (x, rois), ["x", "rois"],
                   {"x": {0: _dim("n"), 2: _dim("h"), 3: _dim("w")}, "rois": {0: _dim("r", 0)}},
                   str(tmp_path / "roi_align.onnx"))
    for n, h, w, count in [(2, 10, 12, 6), (1, 7, 19, 9), (3, 16, 5, 4)]:
        x = torch.randn(n, 3, h, w, generator=gen)
        rois = _rois(n, h, w, 0.25, count, gen)
        (got,) = _run(sess, x, rois)
        torch.testing.assert_close(got, module(x, rois), rtol=1e-5, atol=1e-5)


class _NMS(nn.Module):
    def forward(self, boxes, scores):
        return ops.nms(boxes, scores, 0.5)


class _BatchedNMS(nn.Module):
    def forward(self, boxes, scores, idxs):
        return ops.batched_nms(boxes, scores, idxs, 0.5)


class _ShiftedNMS(nn.Module):
    """The class-offset form (what a program traced on CUDA holds): float64 boxes into nms."""

    def forward(self, boxes, scores, idxs):
        from dcn_det.ops.nms import _batched_nms_offset
        return _batched_nms_offset(boxes, scores, idxs, 0.5)


def _nms_case(n, classes, gen, scale=100.0):
    xy = torch.rand(n, 2, generator=gen) * scale
    boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=gen) * scale / 2 + 1], 1)
    boxes[: n // 4, 2:] = boxes[: n // 4, :2]  # zero-area boxes never suppress
    scores = torch.rand(n, generator=gen)
    return boxes, scores, torch.randint(0, classes, (n,), generator=gen)


def test_nms_onnx_matches_op(tmp_path):
    gen = torch.Generator().manual_seed(7)
    boxes, scores, _ = _nms_case(40, 1, gen)
    sess = _export(_NMS(), (boxes, scores), ["boxes", "scores"],
                   {"boxes": {0: _dim("n", 0)}, "scores": {0: _dim("n", 0)}},
                   str(tmp_path / "nms.onnx"))
    for n in (40, 300, 1, 0):
        boxes, scores, _ = _nms_case(n, 1, gen, scale=60.0)
        (got,) = _run(sess, boxes, scores)
        want = ops.nms(boxes, scores, 0.5)
        assert got.tolist() == want.tolist()
        assert n < 40 or 0 < len(want) < n  # some boxes suppressed, some kept


def test_batched_nms_onnx_is_per_category_and_float32(tmp_path):
    gen = torch.Generator().manual_seed(8)
    boxes, scores, idxs = _nms_case(60, 4, gen)
    sess = _export(_BatchedNMS(), (boxes, scores, idxs), ["boxes", "scores", "idxs"],
                   {k: {0: _dim("n", 0)} for k in ("boxes", "scores", "idxs")},
                   str(tmp_path / "batched.onnx"))
    graph = onnx.load(str(tmp_path / "batched.onnx")).graph
    nodes = [n for n in graph.node if n.op_type == "NonMaxSuppression"]
    assert len(nodes) == 1
    for n, classes in [(60, 4), (500, 81), (7, 1), (0, 3)]:
        boxes, scores, idxs = _nms_case(n, classes, gen, scale=900.0)
        (got,) = _run(sess, boxes, scores, idxs)
        want = ops.batched_nms(boxes, scores, idxs, 0.5)
        assert got.dtype == torch.int64 and got.tolist() == want.tolist()
        assert n < 60 or 0 < len(want) < n  # some boxes suppressed, some kept
    # Identical boxes of different categories both stay; equal scores: lower index first.
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]])
    scores = torch.tensor([0.5, 0.5, 0.9, 0.5])
    idxs = torch.tensor([2, 0, 2, 0])
    (got,) = _run(sess, boxes, scores, idxs)
    assert got.tolist() == ops.batched_nms(boxes, scores, idxs, 0.5).tolist() == [2, 1]


def test_nms_of_float64_boxes_runs_as_float32(tmp_path):
    """The class-offset form hands nms float64 boxes; onnxruntime's NonMaxSuppression takes
    float32 only, so the translation casts (the model used to fail to load)."""
    gen = torch.Generator().manual_seed(9)
    boxes, scores, idxs = _nms_case(50, 3, gen)
    path = str(tmp_path / "shifted.onnx")
    sess = _export(_ShiftedNMS(), (boxes, scores, idxs), ["boxes", "scores", "idxs"],
                   {k: {0: _dim("n", 1)} for k in ("boxes", "scores", "idxs")}, path)
    node = next(n for n in onnx.load(path).graph.node if n.op_type == "NonMaxSuppression")
    assert node.input  # the model loaded and runs (below)
    for n in (50, 200):
        boxes, scores, idxs = _nms_case(n, 3, gen)
        (got,) = _run(sess, boxes, scores, idxs)
        assert got.tolist() == ops.batched_nms(boxes, scores, idxs, 0.5).tolist()
