"""NMS and batched NMS: the CPU kernel against the reference, invariants and errors."""
import pytest
import torch

from dcn_det.ops import batched_nms, nms
from dcn_det.ops.reference import nms_ref, pairwise_iou_ref


def _random_boxes(num, dtype=torch.float32, size=100.0):
    """(num, 4) XYXY boxes, clustered so that many overlap, and distinct scores (no ties)."""
    centres = torch.rand(num // 8 + 1, 2) * size
    xy = centres[torch.randint(0, centres.size(0), (num,))] + torch.randn(num, 2) * size * 0.05
    wh = torch.rand(num, 2) * size * 0.3 + 1.0
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1).to(dtype)
    scores = (torch.randperm(num).to(dtype) + 1) / num
    return boxes, scores


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(threshold, dtype):
    boxes, scores = _random_boxes(300, dtype)
    keep = nms(boxes, scores, threshold)
    assert keep.dtype == torch.int64
    ref = nms_ref(boxes, scores, threshold)
    assert 0 < keep.numel() < 300  # the clustered boxes make NMS do real work
    assert torch.equal(keep, ref)


@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_greedy_invariants(threshold):
    boxes, scores = _random_boxes(200, torch.float64)
    keep = nms(boxes, scores, threshold)
    # Kept boxes come by decreasing score and do not overlap each other beyond the threshold.
    assert torch.all(scores[keep][1:] < scores[keep][:-1])
    iou_kept = pairwise_iou_ref(boxes[keep], boxes[keep]).fill_diagonal_(0)
    assert iou_kept.max() <= threshold
    # Every dropped box overlaps a kept box of higher score beyond the threshold.
    dropped = torch.ones(200, dtype=torch.bool)
    dropped[keep] = False
    iou = pairwise_iou_ref(boxes[dropped], boxes[keep])
    higher = scores[keep][None, :] > scores[dropped][:, None]
    assert torch.all(((iou > threshold) & higher).any(dim=1))


def test_empty_input():
    keep = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64
    keep = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert keep.shape == (0,) and keep.dtype == torch.int64


def test_degenerate_boxes_do_not_crash():
    boxes = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 4.0, 0.0],
                          [0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    keep = nms(boxes, scores, 0.5)
    # Zero-area boxes (IoU 0 or 0/0) never suppress; the duplicate of box 3 is suppressed.
    assert keep.tolist() == [0, 1, 2, 3]
    assert torch.equal(keep, nms_ref(boxes, scores, 0.5))
    keep = batched_nms(boxes, scores, torch.tensor([0, 0, 1, 1, 2]), 0.5)
    assert keep.tolist() == [0, 1, 2, 3, 4]


def test_equal_scores_keep_lower_index_first():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [10.0, 10.0, 12.0, 12.0], [0.0, 0.0, 2.0, 2.1]])
    assert nms(boxes, torch.ones(3), 0.5).tolist() == [0, 1]


def test_dtypes_are_promoted():
    boxes, scores = _random_boxes(60, torch.float64)
    expected = nms(boxes, scores, 0.5)
    assert torch.equal(nms(boxes, scores.float(), 0.5), expected)
    half_boxes = boxes.half()
    assert torch.equal(nms(half_boxes, scores.half(), 0.5),
                       nms(half_boxes.float(), scores.half().float(), 0.5))


@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_batched_equals_per_class(threshold):
    boxes, scores = _random_boxes(240, torch.float32)
    boxes = boxes - 50.0  # negative coordinates too
    idxs = torch.randint(0, 5, (240,))
    keep = batched_nms(boxes, scores, idxs, threshold)
    expected = []
    for cls in idxs.unique().tolist():
        members = torch.nonzero(idxs == cls).flatten()
        expected += members[nms(boxes[members], scores[members], threshold)].tolist()
    assert sorted(keep.tolist()) == sorted(expected)
    assert torch.all(scores[keep][1:] < scores[keep][:-1])


def _many_class_case(num, classes, dtype=torch.float32, score_levels=0):
    """Clustered boxes (some exact duplicates, negative coordinates) in ``classes`` categories
    with scattered, negative ids; ``score_levels`` > 0 quantises the scores so that many tie."""
    boxes, scores = _random_boxes(num, torch.float64, size=300.0)
    boxes = boxes - 100.0
    boxes[1::7] = boxes[0::7][: boxes[1::7].size(0)]  # exact duplicate boxes
    if score_levels:
        scores = torch.randint(0, score_levels, (num,)).double() / score_levels
    idxs = torch.randint(0, classes, (num,)) * 7 - 3 * classes  # ids need not be 0..C-1
    return boxes.to(dtype), scores.to(dtype), idxs


@pytest.mark.parametrize("num,classes", [(400, 1), (2000, 20), (3000, 80), (300, 300)])
@pytest.mark.parametrize("score_levels", [0, 5])
@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_per_class_kernel_equals_class_offset_path(num, classes, score_levels, threshold):
    """The per-category kernel (eager CPU) and the class-offset nms (CUDA, compile, export)
    keep the same boxes in the same order, ties included."""
    from dcn_det.ops.nms import _batched_nms_offset
    boxes, scores, idxs = _many_class_case(num, classes, score_levels=score_levels)
    keep = batched_nms(boxes, scores, idxs, threshold)
    assert torch.equal(keep, torch.ops.dcn_det._batched_nms(boxes, scores, idxs, threshold))
    assert torch.equal(keep, _batched_nms_offset(boxes, scores, idxs, threshold))
    if classes * 10 <= num:
        assert 0 < keep.numel() < num  # real suppression
    if score_levels:  # ties: equal scores come by lower index
        s = scores[keep]
        assert torch.all((s[1:] < s[:-1]) | ((s[1:] == s[:-1]) & (keep[1:] > keep[:-1])))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_per_class_kernel_equals_class_offset_path_other_dtypes(dtype):
    """float64 boxes on a 1/8 grid (so the offset path's shift is exact), half boxes, and
    scores with NaN (visited first, as torch.sort orders them)."""
    from dcn_det.ops.nms import _batched_nms_offset
    boxes, scores, idxs = _many_class_case(1500, 12, score_levels=7)
    boxes = (boxes * 8).round() / 8
    scores[::50] = float("nan")
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    keep = batched_nms(boxes, scores, idxs, 0.5)
    assert torch.equal(keep, _batched_nms_offset(boxes, scores, idxs, 0.5))
    assert torch.isnan(scores[keep[:5]].float()).all()


def test_per_class_kernel_is_per_category_nms():
    """Against the definition: nms_ref on each category, merged in score order."""
    boxes, scores, idxs = _many_class_case(600, 30, dtype=torch.float64)
    expected = []
    for cls in idxs.unique().tolist():
        members = torch.nonzero(idxs == cls).flatten()
        expected += members[nms_ref(boxes[members], scores[members], 0.5)].tolist()
    expected.sort(key=lambda i: -scores[i].item())  # distinct scores
    assert batched_nms(boxes, scores, idxs, 0.5).tolist() == expected


def test_batched_nms_opcheck_and_compile():
    boxes, scores, idxs = _many_class_case(80, 5)
    torch.library.opcheck(torch.ops.dcn_det._batched_nms.default, (boxes, scores, idxs, 0.5))
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        # Compiled on the CPU, batched_nms keeps the per-category operator (its fake kernel
        # makes the output size data-dependent; ONNX maps it to NonMaxSuppression by class).
        compiled = torch.compile(lambda b, s, i: batched_nms(b, s, i, 0.5), backend=backend,
                                 fullgraph=True)
        assert torch.equal(compiled(boxes, scores, idxs), batched_nms(boxes, scores, idxs, 0.5))
    assert len(graphs) == 1 and "dcn_det._batched_nms" in graphs[0]
    assert "dcn_det.nms" not in graphs[0]


def test_batched_kernel_checks_shapes():
    with pytest.raises(RuntimeError, match=r"_batched_nms: idxs must have shape \(N,\)"):
        torch.ops.dcn_det._batched_nms(torch.zeros(3, 4), torch.zeros(3),
                                       torch.zeros(2, dtype=torch.int64), 0.5)
    with pytest.raises(RuntimeError, match="idxs must be an integer tensor"):
        torch.ops.dcn_det._batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(3), 0.5)


def test_batched_separates_classes_with_negative_coordinates():
    # With an offset of only (max + 1) = -0.5 per class these two would overlap and suppress.
    boxes = torch.tensor([[-100.0, -100.0, -1.5, -1.5], [-100.0, -100.0, -1.5, -1.5]])
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.5)
    assert keep.tolist() == [0, 1]


def test_fake_kernel_and_opcheck():
    boxes, scores = _random_boxes(50)
    torch.library.opcheck(torch.ops.dcn_det.nms.default, (boxes, scores, 0.5))
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv
    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        out = torch.ops.dcn_det.nms(mode.from_tensor(boxes), mode.from_tensor(scores), 0.5)
    assert out.dtype == torch.int64 and out.dim() == 1
    assert isinstance(out.shape[0], torch.SymInt)  # data-dependent length


def test_compile_fullgraph_with_data_dependent_output():
    boxes, scores = _random_boxes(40)
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        compiled = torch.compile(lambda b, s: nms(b, s, 0.5), backend="aot_eager",
                                 fullgraph=True)
        assert torch.equal(compiled(boxes, scores), nms(boxes, scores, 0.5))


@pytest.mark.parametrize("call,match", [
    (lambda b, s, i: nms(b[:, :3], s, 0.5),
     r"boxes must have shape \(N, 4\) XYXY, got shape \(6, 3\)"),
    (lambda b, s, i: nms(b[0], s, 0.5), r"boxes must have shape \(N, 4\) XYXY \(2 dims\)"),
    (lambda b, s, i: nms(b, s[:5], 0.5),
     r"scores must have shape \(N,\) with N = .* = 6, got shape \(5,\)"),
    (lambda b, s, i: nms(b, s[:, None], 0.5), r"scores must have shape \(N,\) \(1 dims\)"),
    (lambda b, s, i: nms(b.long(), s, 0.5), "boxes must be a floating-point"),
    (lambda b, s, i: nms(b, s.long(), 0.5), "scores must be a floating-point"),
    (lambda b, s, i: batched_nms(b, s, i.float(), 0.5), "idxs must be an integer tensor"),
    (lambda b, s, i: batched_nms(b, s, i[:4], 0.5),
     r"idxs must have shape \(N,\) .* got shape \(4,\)"),
    (lambda b, s, i: batched_nms(b, s, [0] * 6, 0.5), "idxs must be a torch.Tensor"),
])
def test_bad_inputs(call, match):
    boxes, scores = _random_boxes(6)
    with pytest.raises(ValueError, match=match):
        call(boxes, scores, torch.zeros(6, dtype=torch.int64))


def test_kernel_checks_shapes():
    with pytest.raises(RuntimeError, match=r"nms: boxes must have shape \(N, 4\)"):
        torch.ops.dcn_det.nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(RuntimeError, match="nms: scores has dtype Double but boxes has dtype"):
        torch.ops.dcn_det.nms(torch.zeros(3, 4), torch.zeros(3, dtype=torch.float64), 0.5)


@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_matches_torchvision(tv_ops, threshold):
    boxes, scores = _random_boxes(300)
    assert torch.equal(nms(boxes, scores, threshold), tv_ops.nms(boxes, scores, threshold))
    idxs = torch.randint(0, 4, (300,))
    assert torch.equal(batched_nms(boxes, scores, idxs, threshold),
                       tv_ops.batched_nms(boxes, scores, idxs, threshold))
