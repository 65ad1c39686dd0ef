"""Anchors, the RPN head, proposals and the RPN losses."""
import math

import pytest
import torch
import torch.nn.functional as F

from dcn_det.modeling.rpn import RPN, AnchorGenerator, RPNHead
from dcn_det.structures import ImageList, box_iou


# generate_anchors(base_size=16, ratios=[0.5, 1, 2], scales=[8, 16, 32]) of the official
# py-faster-rcnn code, inclusive pixels (x2 + 1 gives our continuous frame).
OFFICIAL_ANCHORS = [[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
                    [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
                    [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]]


def test_anchors_match_official_generate_anchors():
    gen = AnchorGenerator(16, (8, 16, 32), (0.5, 1.0, 2.0))
    expected = torch.tensor(OFFICIAL_ANCHORS, dtype=torch.float32)
    expected[:, 2:] += 1
    torch.testing.assert_close(gen.cell_anchors, expected)
    assert gen.num_anchors == 9


def test_anchor_layout_is_position_major():
    gen = AnchorGenerator(16, (2, 4), (0.5, 1.0, 2.0))
    anchors = gen(torch.zeros(2, 8, 3, 5))
    assert anchors.shape == (3 * 5 * 6, 4)
    grid = anchors.view(3, 5, 6, 4)
    for i, j in [(0, 0), (1, 3), (2, 4)]:
        shift = torch.tensor([16.0 * j, 16.0 * i] * 2)
        torch.testing.assert_close(grid[i, j], gen.cell_anchors + shift)
    centres = (grid[..., :2] + grid[..., 2:]) / 2
    torch.testing.assert_close(centres[1, 3], torch.tensor([[3.5 * 16, 1.5 * 16]] * 6))
    with pytest.raises(ValueError, match="scales"):
        AnchorGenerator(16, (), (1.0,))


@pytest.mark.parametrize("objectness", ["sigmoid", "softmax"])
def test_rpn_head_shapes_and_layout(objectness):
    head = RPNHead(6, 8, num_anchors=3, objectness=objectness)
    x = torch.randn(2, 6, 4, 5)
    logits, deltas = head(x)
    assert logits.shape == (2, 4 * 5 * 3) and deltas.shape == (2, 4 * 5 * 3, 4)
    # Anchor a of cell (i, j) is row (i*W + j)*A + a; check against the raw conv maps.
    t = torch.relu(head.conv(x))
    raw_box = head.bbox_pred(t)
    raw_cls = head.cls_logits(t)
    i, j, a = 2, 3, 1
    row = (i * 5 + j) * 3 + a
    torch.testing.assert_close(deltas[1, row], raw_box[1, 4 * a:4 * a + 4, i, j])
    if objectness == "sigmoid":
        torch.testing.assert_close(logits[1, row], raw_cls[1, a, i, j])
    else:
        # Official layout: A background maps, then A foreground maps; sigmoid(fg - bg) is
        # the two-way softmax's foreground probability.
        probs = F.softmax(torch.stack((raw_cls[1, a, i, j], raw_cls[1, 3 + a, i, j])), 0)
        torch.testing.assert_close(torch.sigmoid(logits[1, row]), probs[1])
    with pytest.raises(ValueError, match="objectness"):
        RPNHead(6, 8, 3, objectness="softmx")


def _rpn(**kw):
    args = dict(in_channels=4, conv_channels=8, anchor_stride=16, anchor_scales=(1.0,),
                anchor_ratios=(1.0,), pre_nms_topk_train=50, post_nms_topk_train=20,
                pre_nms_topk_test=50, post_nms_topk_test=20)
    args.update(kw)
    return RPN(**args)


def test_proposals_decode_clip_filter_topk_and_nms():
    rpn = _rpn(anchor_scales=(2.0,), pre_nms_topk_test=5, post_nms_topk_test=3,
               min_size=1.0).eval()
    anchors = rpn.anchor_generator(torch.zeros(1, 1, 4, 4))  # 16 anchors of 32x32
    scores = torch.arange(16, dtype=torch.float32)[None]  # the last anchor is best
    deltas = torch.zeros(1, 16, 4)
    deltas[0, 14, 2:] = -20.0  # the second best shrinks to nothing -> removed by min_size
    sizes = [(60, 64)]
    props = rpn._proposals(anchors, scores, deltas, sizes)[0]
    # Order: anchor 15 (clipped), then 13 (14 is gone), then NMS among the next ones.
    torch.testing.assert_close(props[0], torch.tensor([40.0, 40.0, 64.0, 60.0]))
    torch.testing.assert_close(props[1], torch.tensor([8.0, 40.0, 40.0, 60.0]))
    assert props.shape[0] <= 3
    assert (props[:, 0] >= 0).all() and (props[:, 2] <= 64).all() and (props[:, 3] <= 60).all()
    iou = box_iou(props, props).fill_diagonal_(0)
    assert (iou <= rpn.nms_thresh).all()
    # pre_nms_topk bounds what NMS sees: with k=1 only the best box survives.
    rpn.pre_nms_topk[False] = 1
    assert rpn._proposals(anchors, scores, deltas, sizes)[0].shape == (1, 4)


def test_rpn_eval_forward_returns_detached_proposals_per_image():
    rpn = _rpn(anchor_scales=(2.0, 4.0), anchor_ratios=(0.5, 1.0, 2.0)).eval()
    feat = torch.randn(2, 4, 5, 6, requires_grad=True)
    images = ImageList(torch.zeros(2, 3, 80, 96), [(80, 96), (50, 70)])
    props, losses = rpn(images, feat)
    assert losses == {} and len(props) == 2
    for p, (h, w) in zip(props, images.image_sizes):
        assert 0 < p.shape[0] <= 20 and p.shape[1] == 4 and not p.requires_grad
        assert (p[:, 2] <= w).all() and (p[:, 3] <= h).all()
        assert ((p[:, 2] > p[:, 0]) & (p[:, 3] > p[:, 1])).all()


def _constant_head(rpn, logit=0.0, delta=0.0):
    """Makes the RPN head predict constant objectness logits and deltas everywhere."""
    with torch.no_grad():
        for conv in (rpn.head.cls_logits, rpn.head.bbox_pred):
            conv.weight.zero_()
        rpn.head.cls_logits.bias.fill_(logit)
        rpn.head.bbox_pred.bias.fill_(delta)


def test_rpn_losses_exact_values():
    # 16x16 anchors on a 16 px grid never overlap each other, so a GT equal to one anchor
    # makes exactly that anchor positive, with a zero regression target.
    rpn = _rpn(objectness="sigmoid", smooth_l1_beta=1.0 / 9).train()
    feat = torch.randn(1, 4, 4, 4)
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    targets = [{"boxes": torch.tensor([[16.0, 32.0, 32.0, 48.0]])}]
    _constant_head(rpn, logit=0.0, delta=0.5)
    _, losses = rpn(images, feat, targets)
    # 16 anchors inside the image: 1 positive + 15 negatives sampled; BCE(0) = log 2.
    torch.testing.assert_close(losses["loss_rpn_cls"], torch.tensor(math.log(2.0)))
    # One positive, deltas 0.5 vs target 0, each coordinate on smooth-L1's linear branch
    # (|x| >= beta): |x| - beta/2; summed over 4 coordinates, divided by 16 sampled anchors.
    per_coord = 0.5 - 0.5 / 9
    torch.testing.assert_close(losses["loss_rpn_box"], torch.tensor(4 * per_coord / 16))
    # The box loss weight multiplies it.
    rpn.box_loss_weight = 2.0
    torch.testing.assert_close(rpn(images, feat, targets)[1]["loss_rpn_box"],
                               torch.tensor(8 * per_coord / 16))


def test_rpn_ignores_anchors_crossing_the_border():
    rpn = _rpn(anchor_scales=(2.0,)).train()  # 32x32 anchors centred on 16 px cells
    seen = []
    matcher = rpn.matcher

    def spy(gt, boxes):
        seen.append(boxes)
        return matcher(gt, boxes)

    rpn.matcher = spy
    feat = torch.randn(1, 4, 4, 4)
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 48)])  # unpadded 64 x 48
    rpn(images, feat, [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]])}])
    inside = seen[0]
    # Anchor centres 8, 24, 40, 56: x1 >= 0 needs centre >= 16, x2 <= 48 needs centre <= 32,
    # y2 <= 64 needs centre <= 48: 1 column (24) x 2 rows (24, 40).
    assert inside.shape == (2, 4)
    assert (inside[:, 0] >= 0).all() and (inside[:, 2] <= 48).all() and (inside[:, 3] <= 64).all()


def test_rpn_losses_with_empty_gt_and_gradients():
    rpn = _rpn(anchor_scales=(2.0, 4.0), anchor_ratios=(0.5, 1.0, 2.0)).train()
    feat = torch.randn(2, 4, 5, 6, requires_grad=True)
    images = ImageList(torch.zeros(2, 3, 80, 96), [(80, 96), (70, 90)])
    targets = [{"boxes": torch.zeros(0, 4)}, {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]])}]
    props, losses = rpn(images, feat, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    (losses["loss_rpn_cls"] + losses["loss_rpn_box"]).backward()
    assert rpn.head.cls_logits.weight.grad.abs().sum() > 0
    assert rpn.head.bbox_pred.weight.grad.abs().sum() > 0
    assert feat.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in props)
    # No GT at all: only background, box loss exactly 0.
    _, losses = rpn(images, feat, [{"boxes": torch.zeros(0, 4)}] * 2)
    assert losses["loss_rpn_box"] == 0 and torch.isfinite(losses["loss_rpn_cls"])
    with pytest.raises(ValueError, match="targets"):
        rpn(images, feat)


def test_rpn_argument_errors():
    with pytest.raises(ValueError, match="post_nms_topk_test"):
        _rpn(post_nms_topk_test=0)
    with pytest.raises(ValueError, match="nms_thresh"):
        _rpn(nms_thresh=0.0)
