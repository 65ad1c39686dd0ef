"""The FPN detector as a whole: the multi-level RPN's proposal steps, images without RoIs,
torch.export, the Predictor and the offset analysis tools (ONNX: tests/export/test_configs.py,
which exports the deformable FPN config with dynamic sizes)."""
import numpy as np
import pytest
import torch

from dcn_det.analysis import (OffsetCapture, deformable_pool_bins, detect_with_offsets,
                              effective_dilation_table, has_deformable_pooling, pool_bin_rects)
from dcn_det.export import export_program, min_side
from dcn_det.modeling.rpn import RPN, FPNAnchorGenerator
from dcn_det.predictor import Predictor
from tests.modeling.fpn_tiny import batch, tiny_fpn


def _rpn(pre_k, post_k):
    gen = FPNAnchorGenerator((32, 64), (4, 8))
    return RPN(in_channels=4, conv_channels=4, anchor_generator=gen, objectness="sigmoid",
               pre_nms_topk_test=pre_k, post_nms_topk_test=post_k, nms_thresh=0.5,
               allowed_border=None).eval()


def test_rpn_top_k_per_level_then_nms_within_levels():
    """Level 0: three copies of box A (scores 9, 8, 7) and one of B (1); level 1: A (6) and
    C (5). pre_k=2 keeps A9, A8 and A6, C5; NMS within a level drops A8 but not A6 (another
    level); all are ranked together."""
    rpn = _rpn(pre_k=2, post_k=10)
    a, b, c = [10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 90.0, 90.0], [0.0, 60.0, 30.0, 95.0]
    anchors = torch.tensor([a, a, a, b, a, c])
    scores = torch.tensor([[9.0, 8.0, 7.0, 1.0, 6.0, 5.0]])
    deltas = torch.zeros(1, 6, 4)
    props = rpn._proposals(anchors, scores, deltas, [(100, 100)], counts=[4, 2])[0]
    assert props.tolist() == [a, a, c]
    # Without the per-level split (one level), A6 would be suppressed by A9.
    one = rpn._proposals(anchors, scores, deltas, [(100, 100)], counts=[6])[0]
    assert one.tolist() == [a]
    # post_k cuts the merged ranking per image.
    rpn = _rpn(pre_k=2, post_k=2)
    assert rpn._proposals(anchors, scores, deltas, [(100, 100)], counts=[4, 2])[0].tolist() \
        == [a, a]


def test_training_anchors_of_all_levels_and_none_dropped_at_the_border():
    model, _ = tiny_fpn()
    images, targets = batch()
    losses = model(images, targets)  # the second image has no objects: background only
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.rpn.allowed_border is None
    assert model.rpn.anchor_generator.strides == (4, 8, 16, 32, 64)


def test_an_image_without_rois():
    model, _ = tiny_fpn()
    model.eval()
    images, _ = batch()
    with torch.no_grad():
        features = model.neck(model.backbone(model.preprocess(images).tensor))
        levels = [features[n] for n in ("p2", "p3", "p4", "p5")]
        props = [torch.tensor([[4.0, 4.0, 40.0, 40.0], [0.0, 0.0, 60.0, 50.0]]),
                 torch.zeros((0, 4))]
        dets, _ = model.roi_heads(levels, props, [(64, 96), (57, 83)])
    assert dets[1]["boxes"].shape == (0, 4) and dets[1]["scores"].shape == (0,)
    assert dets[0]["boxes"].shape[1] == 4


def _same(got, want):
    for g, name in zip(got, ("boxes", "scores", "labels")):
        assert g.dtype == want[name].dtype and g.shape == want[name].shape, name
        torch.testing.assert_close(g, want[name], rtol=1e-5, atol=1e-4)


def _eval_model(pooler="deformable", extra=()):
    model, cfg = tiny_fpn(extra=["model.backbone.deform_stages=[res3,res4,res5]",
                                 f"model.head.pooler={pooler}", "model.head.score_thresh=0.0",
                                 *extra])
    model.eval()
    with torch.no_grad():  # non-zero offsets, so the deformable paths matter
        for name, p in model.named_parameters():
            if "offset" in name:
                p.normal_(0.0, 0.01)
    return model, cfg


def test_fpn_programs_take_sides_from_65_px():
    """With the default padding (32), a program accepts sides from 65 px (P6, stride 64, keeps
    2 cells: ``torch.export`` would specialise a side that can be 1); a smaller example is
    refused before tracing. (The program against eager at the smallest side and others:
    tests/export/test_configs.py.)"""
    model, _ = _eval_model()
    assert model.size_divisibility == 32 and min_side(model) == 65
    with pytest.raises(ValueError, match=r"sides must be in \[65, 4096\]"):
        export_program(model, torch.zeros((3, 64, 96), dtype=torch.uint8))


def test_predictor_with_fpn():
    model, cfg = _eval_model()
    predictor = Predictor.from_model(model, cfg, ["a", "b", "c"], score_thresh=0.0)
    image = np.random.default_rng(0).integers(0, 256, (75, 101, 3), dtype=np.uint8)
    got = predictor(image)
    assert got["boxes"].shape[1] == 4 and len(got["scores"]) > 0
    assert float(got["boxes"][:, 0::2].max()) <= 101 + 1e-4
    assert float(got["boxes"][:, 1::2].max()) <= 75 + 1e-4
    assert set(got["class_names"]) <= {"a", "b", "c"}


def test_offset_capture_and_dilation_table_on_an_fpn_backbone():
    model, _ = _eval_model()
    images, targets = batch()
    with OffsetCapture(model) as cap, torch.no_grad():
        model(images[:1])
    names = [r.name for r in cap.ordered_records()]
    assert {n.split(".")[0] for n in names} == {"res3", "res4", "res5"}
    strides = {r.name.split(".")[0]: r.output_stride for r in cap.ordered_records()}
    assert strides == {"res3": 8, "res4": 16, "res5": 32}  # res5 undilated with FPN
    data = [(img, {"boxes": t["boxes"], "labels": t["labels"], "orig_size": img.shape[1:]})
            for img, t in zip(images[:1], targets[:1])]
    table = effective_dilation_table(model, data, max_images=1)
    assert table is not None


def test_pool_bins_of_the_fpn_head_follow_each_boxs_level():
    model, _ = _eval_model()
    assert has_deformable_pooling(model)
    img = batch()[0][0]
    res = detect_with_offsets(model, img)
    pool = model.roi_heads.box_head.pool
    boxes = torch.tensor([[2.0, 2.0, 30.0, 20.0], [0.0, 0.0, 63.0, 95.0]])
    bins = deformable_pool_bins(model.roi_heads.box_head, res.head_feature, boxes)
    rois = torch.cat((torch.zeros(2, 1), boxes), 1)
    for i, level in enumerate(pool.levels(rois).tolist()):
        with torch.no_grad():
            off = pool.offsets(level, res.head_feature[level], rois[i:i + 1])
        op = pool.pools[level]
        want = pool_bin_rects(boxes[i:i + 1], off, spatial_scale=op.spatial_scale,
                              pooled_size=op.pooled_size, trans_std=op.trans_std)
        torch.testing.assert_close(bins.shifted[i:i + 1], want.shifted)
        torch.testing.assert_close(bins.regular[i:i + 1], want.regular)
    plain, _ = _eval_model("roi_align")
    assert not has_deformable_pooling(plain)
