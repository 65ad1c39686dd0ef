"""RoIHeads: RoI labelling and sampling, OHEM, losses and detection post-processing."""
import math

import pytest
import torch
from torch import nn

from dcn_det.modeling.heads.roi_heads import RoIHeads
from dcn_det.structures import box_iou


class LinearHead(nn.Module):
    """TEST-ONLY box head: a linear map of each RoI's box and its image's mean feature."""

    def __init__(self, num_classes, num_box_sets):
        super().__init__()
        self.k, self.b = num_classes, num_box_sets
        self.lin = nn.Linear(5, num_classes + 1 + 4 * num_box_sets)
        self.seen = []

    def forward(self, feature, rois):
        self.seen.append(rois)
        pooled = feature.mean(dim=(1, 2, 3))[rois[:, 0].long()]
        out = self.lin(torch.cat((rois[:, 1:] / 100, pooled[:, None]), dim=1))
        return out[:, :self.k + 1], out[:, self.k + 1:].reshape(-1, self.b, 4)


class FixedHead(nn.Module):
    """TEST-ONLY box head returning preset outputs (for exact inference checks)."""

    def __init__(self, cls_logits, deltas):
        super().__init__()
        self.cls_logits, self.deltas = cls_logits, deltas

    def forward(self, feature, rois):
        assert rois.shape[0] == self.cls_logits.shape[0]
        return self.cls_logits, self.deltas


def _zero(head, delta_bias=None):
    with torch.no_grad():
        head.lin.weight.zero_()
        head.lin.bias.zero_()
        if delta_bias is not None:
            head.lin.bias[head.k + 1:] = delta_bias
    return head


FEAT = torch.randn(2, 4, 6, 6)
GT = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([2])}
# IoU with the GT: 0.6 (fg), 0.4 (bg), 0.05 (below bg_iou_lo = 0.1: ignored), 0 (ignored).
PROPS = torch.tensor([[0.0, 0.0, 10.0, 6.0], [0.0, 0.0, 4.0, 10.0], [0.0, 0.0, 0.5, 10.0],
                      [50.0, 50.0, 60.0, 60.0]])


def test_training_labels_targets_and_exact_losses():
    head = _zero(LinearHead(3, 1))
    roi_heads = RoIHeads(box_head=head, num_classes=3, bg_iou_lo=0.1).train()
    boxes, classes, targets = roi_heads.label_and_sample_proposals([PROPS], [GT])
    # The GT itself is a candidate: GT + the 0.6 proposal are foreground, the 0.4 one is bg.
    fg_first = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 6.0]])
    assert sorted(map(tuple, boxes[0][:2].tolist())) == sorted(map(tuple, fg_first.tolist()))
    torch.testing.assert_close(boxes[0][2], PROPS[1])
    assert classes[0].tolist() == [2, 2, 3]
    # Target of the 0.6 proposal: centre y 3 -> 5 over height 6 (std 0.1), height 6 -> 10 (std 0.2).
    t = torch.tensor([0.0, (2 / 6) / 0.1, 0.0, math.log(10 / 6) / 0.2])
    row = 0 if boxes[0][0, 3] == 6 else 1
    torch.testing.assert_close(targets[0][row], t)
    torch.testing.assert_close(targets[0][1 - row], torch.zeros(4))

    _, losses = roi_heads(FEAT[:1], [PROPS], [(64, 64)], [GT])
    assert len(head.seen[-1]) == 3  # the ignored proposals never reach the head
    # Zero logits: CE = log(K + 1). Zero deltas: smooth-L1 (beta 1) of the target, / 3 RoIs.
    torch.testing.assert_close(losses["loss_cls"], torch.tensor(math.log(4.0)))
    expected_box = ((t[1] - 0.5) + (t[3] - 0.5)) / 3
    torch.testing.assert_close(losses["loss_box"], expected_box)


def test_class_specific_box_loss_uses_the_gt_class_slot():
    # Class c's deltas are all c + 1; the only RoI is the GT (label 2, target 0).
    head = _zero(LinearHead(3, 3), torch.tensor([1.0] * 4 + [2.0] * 4 + [3.0] * 4))
    roi_heads = RoIHeads(box_head=head, num_classes=3).train()
    _, losses = roi_heads(FEAT[:1], [torch.zeros(0, 4)], [(64, 64)], [GT])
    torch.testing.assert_close(losses["loss_box"], torch.tensor(4 * (3.0 - 0.5)))


def test_sampling_respects_batch_size_and_fg_fraction():
    g = torch.Generator().manual_seed(0)
    gt = {"boxes": torch.tensor([[20.0, 20.0, 60.0, 60.0]]), "labels": torch.tensor([0])}
    fg = gt["boxes"] + torch.randn(200, 4, generator=g)  # jittered: IoU well above 0.5
    bg = torch.tensor([[100.0, 100.0, 140.0, 140.0]]) + torch.rand(500, 4, generator=g) * 50
    head = LinearHead(2, 1)
    roi_heads = RoIHeads(box_head=head, num_classes=2, batch_size_per_image=64,
                         positive_fraction=0.25).train()
    roi_heads(FEAT, [torch.cat((fg, bg)), bg[:10]], [(200, 200)] * 2, [gt, gt])
    rois = head.seen[-1]
    img0 = rois[rois[:, 0] == 0, 1:]
    img1 = rois[rois[:, 0] == 1, 1:]
    assert img0.shape[0] == 64
    assert (box_iou(img0, gt["boxes"])[:, 0] >= 0.5).sum() == 16
    # Image 1 has only the GT as foreground and 10 background proposals: all are used.
    assert img1.shape[0] == 11


def test_ohem_keeps_the_hardest_rois_per_image():
    k = 3

    class HardnessHead(nn.Module):
        """TEST-ONLY: background logit = x1 / 10, so small x1 = hard background."""

        def forward(self, feature, rois):
            logits = torch.zeros(rois.shape[0], k + 1)
            logits[:, k] = rois[:, 1] / 10
            return logits, torch.zeros(rois.shape[0], 1, 4)

    x1 = torch.arange(10, dtype=torch.float32)
    props = torch.stack((x1, x1, x1 + 5, x1 + 5), dim=1)
    roi_heads = RoIHeads(box_head=HardnessHead(), num_classes=k, batch_size_per_image=4,
                         ohem=True).train()
    no_gt = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    _, losses = roi_heads(FEAT, [props, props + 3], [(64, 64)] * 2, [no_gt, no_gt])

    def ce(v):
        return math.log(k + math.exp(v / 10)) - v / 10

    expected = (sum(ce(v) for v in (0, 1, 2, 3)) + sum(ce(v) for v in (3, 4, 5, 6))) / 8
    torch.testing.assert_close(losses["loss_cls"], torch.tensor(expected))
    assert losses["loss_box"] == 0


def test_empty_gt_and_degenerate_proposals_give_finite_losses():
    head = LinearHead(3, 1)
    roi_heads = RoIHeads(box_head=head, num_classes=3).train()
    degenerate = torch.tensor([[5.0, 5.0, 5.0, 20.0], [5.0, 5.0, 20.0, 5.0], [9.0, 9.0, 3.0, 3.0],
                               [0.0, 0.0, 0.0, 0.0]])
    no_gt = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    _, losses = roi_heads(FEAT, [degenerate, PROPS], [(64, 64)] * 2, [no_gt, GT])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert head.lin.weight.grad.abs().sum() > 0
    _, losses = roi_heads(FEAT[:1], [degenerate], [(64, 64)], [no_gt])
    assert losses["loss_box"] == 0 and torch.isfinite(losses["loss_cls"])
    # Nothing at all to learn from: zero, not NaN.
    _, losses = roi_heads(FEAT[:1], [torch.zeros(0, 4)], [(64, 64)], [no_gt])
    assert losses["loss_cls"] == 0 and losses["loss_box"] == 0
    with pytest.raises(ValueError, match="targets"):
        roi_heads(FEAT[:1], [PROPS], [(64, 64)])


INF_PROPS = torch.tensor([[10.0, 10.0, 30.0, 30.0], [12.0, 10.0, 32.0, 30.0],
                          [100.0, 100.0, 140.0, 150.0]])


def _logits(rows):
    out = torch.zeros(len(rows), 4)  # K = 3 + background
    for r, (c, v) in enumerate(rows):
        out[r, c] = v
    return out


def test_inference_nms_threshold_topk_and_clipping():
    logits = _logits([(0, 5.0), (0, 4.0), (2, 6.0)])
    head = FixedHead(logits, torch.zeros(3, 1, 4))
    roi_heads = RoIHeads(box_head=head, num_classes=3, score_thresh=0.05).eval()
    dets, losses = roi_heads(FEAT[:1], [INF_PROPS], [(120, 130)])
    assert losses == {}
    d = dets[0]
    # Proposal 1 overlaps proposal 0 (IoU 0.82) in the same class: suppressed. Every other
    # class scores 1 / (e^v + 3) < 0.05.
    assert d["labels"].tolist() == [2, 0] and d["labels"].dtype == torch.int64
    torch.testing.assert_close(d["scores"], torch.tensor([math.exp(6) / (math.exp(6) + 3),
                                                          math.exp(5) / (math.exp(5) + 3)]))
    torch.testing.assert_close(d["boxes"], torch.tensor([[100.0, 100.0, 130.0, 120.0],
                                                         [10.0, 10.0, 30.0, 30.0]]))
    roi_heads.detections_per_image = 1
    assert roi_heads(FEAT[:1], [INF_PROPS], [(120, 130)])[0][0]["labels"].tolist() == [2]
    # Overlapping boxes of different classes are both kept.
    head.cls_logits = _logits([(0, 5.0), (1, 4.0), (2, 6.0)])
    roi_heads.detections_per_image = 100
    assert sorted(roi_heads(FEAT[:1], [INF_PROPS], [(120, 130)])[0][0]["labels"].tolist()) == [0, 1, 2]


def test_inference_class_specific_deltas_and_two_images():
    deltas = torch.zeros(4, 3, 4)
    deltas[2, 2, 0] = 1.0  # class 2 of proposal 2: dx = 1 * std 0.1 * width 40 = +4 px
    logits = torch.cat((_logits([(0, 5.0), (0, 4.0), (2, 6.0)]), _logits([(1, 5.0)])))
    head = FixedHead(logits, deltas)
    roi_heads = RoIHeads(box_head=head, num_classes=3, score_thresh=0.05).eval()
    dets, _ = roi_heads(FEAT, [INF_PROPS, INF_PROPS[:1]], [(200, 200), (20, 25)])
    torch.testing.assert_close(dets[0]["boxes"][0], torch.tensor([104.0, 100.0, 144.0, 150.0]))
    assert dets[1]["labels"].tolist() == [1]
    torch.testing.assert_close(dets[1]["boxes"], torch.tensor([[10.0, 10.0, 25.0, 20.0]]))


def test_inference_empty_and_degenerate_proposals():
    roi_heads = RoIHeads(box_head=LinearHead(3, 1), num_classes=3, score_thresh=0.0).eval()
    dets, _ = roi_heads(FEAT, [torch.zeros(0, 4), torch.tensor([[5.0, 5.0, 5.0, 9.0]])],
                        [(64, 64)] * 2)
    for d in dets:
        assert d["boxes"].shape == (0, 4) and d["scores"].shape == (0,)
        assert d["labels"].shape == (0,) and d["labels"].dtype == torch.int64


def test_wrong_head_output_shapes_are_reported():
    head = FixedHead(torch.zeros(3, 3), torch.zeros(3, 1, 4))  # K+1 should be 4
    roi_heads = RoIHeads(box_head=head, num_classes=3).eval()
    with pytest.raises(RuntimeError, match=r"cls_logits \(3, 3\).*num_classes=3"):
        roi_heads(FEAT[:1], [INF_PROPS], [(64, 64)])
    with pytest.raises(ValueError, match="num_classes"):
        RoIHeads(box_head=head, num_classes=0)
