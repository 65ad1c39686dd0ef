"""Region Proposal Network: anchors, proposals and the RPN losses."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from dcn_det import ops
from dcn_det.modeling.box_utils import BalancedSampler, BoxCoder, Matcher
from dcn_det.modeling.rpn.anchor_generator import AnchorGenerator
from dcn_det.modeling.rpn.head import RPNHead
from dcn_det.structures import ImageList, clip_boxes, nonempty_boxes


class RPN(nn.Module):
    """Proposes object boxes from one feature map (res4 in the paper's models).

    Proposals, per image: decode every anchor's deltas -> clip to the image -> drop boxes
    not wider and taller than ``min_size`` -> keep the ``pre_nms_topk`` best by objectness ->
    NMS at ``nms_thresh`` -> keep the ``post_nms_topk`` best. Proposals are detached: the
    RoI head's loss does not flow back into the RPN through the box coordinates.

    Training targets (official ``assign_anchor``): anchors that cross the image border by
    more than ``allowed_border`` pixels are ignored (the official code removes them; with
    ``allowed_border=0`` an anchor must lie within ``[0, w] x [0, h]`` of its unpadded
    image); the rest are matched with IoU ``>= fg_iou`` -> foreground, ``< bg_iou`` ->
    background, plus the best anchor(s) of every GT -> foreground; ``batch_size_per_image``
    anchors are sampled with at most ``positive_fraction`` foreground.

    Losses: ``loss_rpn_cls`` = binary cross-entropy averaged over the sampled anchors;
    ``loss_rpn_box`` = smooth-L1 (``smooth_l1_beta``; 1/9 is the official sigma 3) on the
    foreground anchors, summed and divided by the number of sampled anchors (the official
    code divides by the 256 sampled per image), times ``box_loss_weight``. RPN box targets
    are not normalised (stds 1).

    Args:
        in_channels: channels of the input feature.
        conv_channels: channels of the head's 3x3 conv.
        anchor_stride: the feature's stride in input pixels.
        anchor_scales, anchor_ratios: see :class:`AnchorGenerator`.
        objectness: ``"sigmoid"`` or ``"softmax"``, see :class:`RPNHead`.
        batch_size_per_image, positive_fraction: anchor sampling.
        fg_iou, bg_iou: matching thresholds.
        pre_nms_topk_train, post_nms_topk_train, pre_nms_topk_test, post_nms_topk_test:
            proposal counts per image in training and in eval mode.
        nms_thresh: NMS IoU threshold on proposals.
        min_size: minimum proposal side in input pixels (strictly above).
        box_loss_weight: multiplier of ``loss_rpn_box``.
        smooth_l1_beta: smooth-L1 transition point (0 = L1).
        allowed_border: how far (pixels) a training anchor may extend beyond the image.
    """

    def __init__(self, *, in_channels: int, conv_channels: int = 512, anchor_stride: int = 16,
                 anchor_scales: Sequence[float] = (4, 8, 16, 32),
                 anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0), objectness: str = "softmax",
                 batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 fg_iou: float = 0.7, bg_iou: float = 0.3, pre_nms_topk_train: int = 6000,
                 post_nms_topk_train: int = 300, pre_nms_topk_test: int = 6000,
                 post_nms_topk_test: int = 300, nms_thresh: float = 0.7, min_size: float = 0.0,
                 box_loss_weight: float = 1.0, smooth_l1_beta: float = 1.0 / 9,
                 allowed_border: float = 0.0):
        super().__init__()
        for name, v in (("pre_nms_topk_train", pre_nms_topk_train),
                        ("post_nms_topk_train", post_nms_topk_train),
                        ("pre_nms_topk_test", pre_nms_topk_test),
                        ("post_nms_topk_test", post_nms_topk_test)):
            if v < 1:
                raise ValueError(f"RPN {name} must be >= 1, got {v}")
        if not 0.0 < nms_thresh <= 1.0:
            raise ValueError(f"RPN nms_thresh must be in (0, 1], got {nms_thresh}")
        self.anchor_generator = AnchorGenerator(anchor_stride, anchor_scales, anchor_ratios)
        self.head = RPNHead(in_channels, conv_channels, self.anchor_generator.num_anchors,
                            objectness)
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(fg_iou, bg_iou, allow_low_quality_matches=True)
        self.sampler = BalancedSampler(batch_size_per_image, positive_fraction)
        self.pre_nms_topk = {True: pre_nms_topk_train, False: pre_nms_topk_test}
        self.post_nms_topk = {True: post_nms_topk_train, False: post_nms_topk_test}
        self.nms_thresh = nms_thresh
        self.min_size = min_size
        self.box_loss_weight = box_loss_weight
        self.smooth_l1_beta = smooth_l1_beta
        self.allowed_border = allowed_border

    def forward(self, images: ImageList, feature: torch.Tensor,
                targets: Optional[List[Dict[str, torch.Tensor]]] = None
                ) -> Tuple[List[torch.Tensor], Dict[str, torch.Tensor]]:
        """Runs the RPN on ``feature (N, C, H', W')`` of the padded batch ``images``.

        Args:
            images: the batch; ``image_sizes`` bound the proposals and the training anchors.
            feature: backbone feature at ``anchor_stride``.
            targets: in training, per image ``{"boxes": (M_i, 4) XYXY input px}``.

        Returns:
            ``proposals``: per image ``(P_i, 4)`` XYXY input px, detached, best first;
            ``losses``: ``{"loss_rpn_cls", "loss_rpn_box"}`` in training, else ``{}``.
        """
        objectness, deltas = self.head(feature)
        anchors = self.anchor_generator(feature)
        proposals = self._proposals(anchors, objectness.detach(), deltas.detach(),
                                    images.image_sizes)
        losses: Dict[str, torch.Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("RPN.forward: targets are required in training mode")
            losses = self._losses(anchors, objectness, deltas, targets, images.image_sizes)
        return proposals, losses

    def _proposals(self, anchors: torch.Tensor, objectness: torch.Tensor, deltas: torch.Tensor,
                   image_sizes: List[Tuple[int, int]]) -> List[torch.Tensor]:
        """Per-image proposal boxes (see the class docstring for the steps)."""
        pre_k = self.pre_nms_topk[self.training]
        post_k = self.post_nms_topk[self.training]
        out = []
        for i, size in enumerate(image_sizes):
            boxes = clip_boxes(self.box_coder.decode(deltas[i], anchors), size)
            scores = objectness[i].float()  # ranked with the float32 boxes
            keep = nonempty_boxes(boxes, self.min_size)
            boxes, scores = boxes[keep], scores[keep]
            scores, order = scores.topk(min(pre_k, scores.numel()))
            boxes = boxes[order]
            keep = ops.nms(boxes, scores, self.nms_thresh)[:post_k]
            out.append(boxes[keep])
        return out

    def _losses(self, anchors: torch.Tensor, objectness: torch.Tensor, deltas: torch.Tensor,
                targets: List[Dict[str, torch.Tensor]], image_sizes: List[Tuple[int, int]]
                ) -> Dict[str, torch.Tensor]:
        """``loss_rpn_cls`` and ``loss_rpn_box`` over the sampled anchors of every image."""
        b = self.allowed_border
        cls_losses, box_losses, num_sampled = [], [], 0
        for i, (h, w) in enumerate(image_sizes):
            gt = targets[i]["boxes"].to(anchors)
            inside = ((anchors[:, 0] >= -b) & (anchors[:, 1] >= -b)
                      & (anchors[:, 2] <= w + b) & (anchors[:, 3] <= h + b))
            inside_idx = torch.nonzero(inside).flatten()
            matched, labels, _ = self.matcher(gt, anchors[inside_idx])
            pos, neg = self.sampler(labels)
            sampled = torch.cat((pos, neg))
            num_sampled += sampled.numel()
            cls_target = torch.cat((torch.ones_like(pos), torch.zeros_like(neg))).to(objectness)
            logits = objectness[i, inside_idx[sampled]]
            cls_losses.append(F.binary_cross_entropy_with_logits(logits, cls_target,
                                                                 reduction="sum"))
            pos_anchor = anchors[inside_idx[pos]]
            target = self.box_coder.encode(gt[matched[pos]], pos_anchor) if pos.numel() else \
                pos_anchor.new_zeros((0, 4))
            box_losses.append(F.smooth_l1_loss(deltas[i, inside_idx[pos]], target,
                                               beta=self.smooth_l1_beta, reduction="sum"))
        # max(., 1): an image batch with no usable anchor yields zero losses, never NaN.
        norm = float(max(num_sampled, 1))
        return {
            "loss_rpn_cls": torch.stack(cls_losses).sum() / norm,
            "loss_rpn_box": torch.stack(box_losses).sum() / norm * self.box_loss_weight,
        }
