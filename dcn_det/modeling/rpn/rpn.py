"""Region Proposal Network: anchors, proposals and the RPN losses."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from dcn_det import ops
from dcn_det.modeling.box_utils import BalancedSampler, BoxCoder, Matcher
from dcn_det.modeling.rpn.anchor_generator import AnchorGenerator
from dcn_det.modeling.rpn.head import RPNHead
from dcn_det.structures import ImageList, clip_boxes, nonempty_boxes


class RPN(nn.Module):
    """Proposes object boxes from one feature map (res4 in the paper's models) or from the
    levels of a feature pyramid (P2-P6), with one head shared by all levels.

    Proposals, per image and level: decode every anchor's deltas -> clip to the image -> drop
    boxes not wider and taller than ``min_size`` -> keep the level's ``pre_nms_topk`` best by
    objectness; then over all levels NMS at ``nms_thresh`` (within each level, as detectron2's
    ``find_top_rpn_proposals``; plain NMS with one level) -> keep the image's
    ``post_nms_topk`` best. Proposals are detached: the RoI head's loss does not flow back
    into the RPN through the box coordinates.

    Training targets (official ``assign_anchor``), over the anchors of all levels together:
    anchors that cross the image border by more than ``allowed_border`` pixels are ignored
    (the official code removes them; with ``allowed_border=0`` an anchor must lie within
    ``[0, w] x [0, h]`` of its unpadded image; ``None`` keeps every anchor, detectron2's
    ``BOUNDARY_THRESH=-1``); the rest are matched with IoU ``>= fg_iou`` -> foreground, ``< bg_iou`` ->
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
        allowed_border: how far (pixels) a training anchor may extend beyond the image;
            None = no limit.
        anchor_generator: the anchors of several levels (an ``FPNAnchorGenerator``); when
            given, it replaces the one built from ``anchor_stride``, ``anchor_scales`` and
            ``anchor_ratios``.
    """

    def __init__(self, *, in_channels: int, conv_channels: int = 512, anchor_stride: int = 16,
                 anchor_scales: Sequence[float] = (4, 8, 16, 32),
                 anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0), objectness: str = "softmax",
                 batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 fg_iou: float = 0.7, bg_iou: float = 0.3, pre_nms_topk_train: int = 6000,
                 post_nms_topk_train: int = 300, pre_nms_topk_test: int = 6000,
                 post_nms_topk_test: int = 300, nms_thresh: float = 0.7, min_size: float = 0.0,
                 box_loss_weight: float = 1.0, smooth_l1_beta: float = 1.0 / 9,
                 allowed_border: Optional[float] = 0.0,
                 anchor_generator: Optional[nn.Module] = None):
        super().__init__()
        for name, v in (("pre_nms_topk_train", pre_nms_topk_train),
                        ("post_nms_topk_train", post_nms_topk_train),
                        ("pre_nms_topk_test", pre_nms_topk_test),
                        ("post_nms_topk_test", post_nms_topk_test)):
            if v < 1:
                raise ValueError(f"RPN {name} must be >= 1, got {v}")
        if not 0.0 < nms_thresh <= 1.0:
            raise ValueError(f"RPN nms_thresh must be in (0, 1], got {nms_thresh}")
        self.anchor_generator = anchor_generator if anchor_generator is not None else \
            AnchorGenerator(anchor_stride, anchor_scales, anchor_ratios)
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

    def forward(self, images: ImageList,
                features: Union[torch.Tensor, Sequence[torch.Tensor]],
                targets: Optional[List[Dict[str, torch.Tensor]]] = None
                ) -> Tuple[List[torch.Tensor], Dict[str, torch.Tensor]]:
        """Runs the RPN on the feature map(s) of the padded batch ``images``.

        Args:
            images: the batch; ``image_sizes`` bound the proposals and the training anchors.
            features: one ``(N, C, H', W')`` feature at ``anchor_stride``, or a list of
                levels ``(N, C, H_l, W_l)`` in the anchor generator's level order.
            targets: in training, per image ``{"boxes": (M_i, 4) XYXY input px}``.

        Returns:
            ``proposals``: per image ``(P_i, 4)`` XYXY input px, detached, best first;
            ``losses``: ``{"loss_rpn_cls", "loss_rpn_box"}`` in training, else ``{}``.
        """
        if isinstance(features, torch.Tensor):
            features = [features]
        scored = [self.head(f) for f in features]
        anchors = self.anchor_generator.grid_anchors(features)
        # Anchors per level, so that the concatenated tensors can be cut back into levels.
        counts = [a.shape[0] for a in anchors]
        objectness = torch.cat([o for o, _ in scored], dim=1)
        deltas = torch.cat([d for _, d in scored], dim=1)
        anchors_all = torch.cat(anchors)
        proposals = self._proposals(anchors_all, objectness.detach(), deltas.detach(),
                                    images.image_sizes, counts)
        losses: Dict[str, torch.Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("RPN.forward: targets are required in training mode")
            losses = self._losses(anchors_all, objectness, deltas, targets, images.image_sizes)
        return proposals, losses

    def _proposals(self, anchors: torch.Tensor, objectness: torch.Tensor, deltas: torch.Tensor,
                   image_sizes: List[Tuple[int, int]],
                   counts: Optional[Sequence[int]] = None) -> List[torch.Tensor]:
        """Per-image proposal boxes (see the class docstring for the steps).

        Args:
            anchors: ``(A_total, 4)`` the anchors of all levels, concatenated.
            objectness, deltas: ``(N, A_total)`` and ``(N, A_total, 4)`` in the same order.
            image_sizes: per image unpadded ``(h, w)``.
            counts: anchors per level (one level holding all when None).
        """
        pre_k = self.pre_nms_topk[self.training]
        post_k = self.post_nms_topk[self.training]
        counts = [anchors.shape[0]] if counts is None else list(counts)
        out = []
        for i, size in enumerate(image_sizes):
            level_boxes, level_scores, level_ids, start = [], [], [], 0
            for level, n in enumerate(counts):
                boxes = clip_boxes(self.box_coder.decode(deltas[i, start:start + n],
                                                         anchors[start:start + n]), size)
                scores = objectness[i, start:start + n].float()  # ranked with the float32 boxes
                start += n
                keep = nonempty_boxes(boxes, self.min_size)
                boxes, scores = boxes[keep], scores[keep]
                scores, order = scores.topk(min(pre_k, scores.numel()))
                level_boxes.append(boxes[order])
                level_scores.append(scores)
                level_ids.append(torch.full_like(order, level))
            if len(counts) == 1:
                boxes, scores = level_boxes[0], level_scores[0]
                keep = ops.nms(boxes, scores, self.nms_thresh)[:post_k]
            else:
                boxes, scores = torch.cat(level_boxes), torch.cat(level_scores)
                # NMS within each level (detectron2), then the best over all levels.
                keep = ops.batched_nms(boxes, scores, torch.cat(level_ids), self.nms_thresh)
                keep = keep[:post_k]
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
            if b is None:
                inside_idx = torch.arange(anchors.shape[0], device=anchors.device)
            else:
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
