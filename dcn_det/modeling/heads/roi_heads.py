"""RoI heads: proposal sampling, box-head losses and detection post-processing.

The box head itself (R-FCN or Fast R-CNN, ``dcn_det.modeling.heads``) only maps
``(feature, rois)`` to scores and deltas; this module decides which RoIs it sees in
training, what their targets are, and how its outputs become detections.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from dcn_det import ops
from dcn_det.modeling.box_utils import BalancedSampler, BoxCoder, Matcher
from dcn_det.structures import boxes_to_rois, clip_boxes, nonempty_boxes


class RoIHeads(nn.Module):
    """Training targets, losses and inference around a box head.

    Training, per image: the GT boxes are appended to the proposals; each RoI is matched to
    the GT (IoU ``>= fg_iou`` -> its GT's class, IoU in ``[bg_iou_lo, bg_iou_hi)`` ->
    background ``K``, otherwise ignored; no GT -> all background); then either
    ``batch_size_per_image`` RoIs are sampled with at most ``positive_fraction`` foreground,
    or, with ``ohem``, the head scores every labelled RoI and the ``batch_size_per_image``
    with the largest loss (classification + box) are kept (online hard example mining).

    Losses: ``loss_cls`` = softmax cross-entropy averaged over the kept RoIs; ``loss_box`` =
    smooth-L1 on the foreground RoIs' deltas of their GT class (or the single
    class-agnostic set), summed and divided by the number of kept RoIs (the official
    normalisation). Targets are encoded with stds ``box_coder_stds``.

    Inference: softmax scores; boxes decoded per class (or once, class-agnostic) from the
    proposals and clipped to the image; candidates scoring above ``score_thresh`` and with a
    non-empty box go through per-class NMS at ``nms_thresh``; the best
    ``detections_per_image`` are returned.

    Args:
        box_head: module ``(feature (N,C,H,W), rois (R,5)) -> (cls_logits (R, K+1),
            box_deltas (R, B, 4))``, background at index ``K``, ``B`` 1 (class-agnostic) or
            ``K``.
        num_classes: ``K`` object classes (background excluded).
        batch_size_per_image, positive_fraction: RoI sampling (OHEM keeps that many RoIs).
        fg_iou, bg_iou_hi, bg_iou_lo: matching thresholds.
        ohem: online hard example mining instead of random sampling.
        box_coder_stds: target normalisation ``(x, y, w, h)``.
        smooth_l1_beta: smooth-L1 transition point (1.0 is the official sigma 1).
        score_thresh, nms_thresh, detections_per_image: inference post-processing.
    """

    def __init__(self, *, box_head: nn.Module, num_classes: int, batch_size_per_image: int = 128,
                 positive_fraction: float = 0.25, fg_iou: float = 0.5, bg_iou_hi: float = 0.5,
                 bg_iou_lo: float = 0.0, ohem: bool = False,
                 box_coder_stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
                 smooth_l1_beta: float = 1.0, score_thresh: float = 0.001,
                 nms_thresh: float = 0.3, detections_per_image: int = 100):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"RoIHeads num_classes must be >= 1, got {num_classes}")
        if detections_per_image < 1:
            raise ValueError(
                f"RoIHeads detections_per_image must be >= 1, got {detections_per_image}")
        self.box_head = box_head
        self.num_classes = num_classes
        self.batch_size_per_image = batch_size_per_image
        self.matcher = Matcher(fg_iou, bg_iou_hi, allow_low_quality_matches=False,
                               bg_iou_lo=bg_iou_lo)
        self.sampler = BalancedSampler(batch_size_per_image, positive_fraction)
        self.ohem = ohem
        self.box_coder = BoxCoder(box_coder_stds)
        self.smooth_l1_beta = smooth_l1_beta
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image

    def forward(self, feature: torch.Tensor, proposals: List[torch.Tensor],
                image_sizes: List[Tuple[int, int]],
                targets: Optional[List[Dict[str, torch.Tensor]]] = None
                ) -> Tuple[List[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]:
        """Runs the head on ``feature (N, C, H', W')``.

        Args:
            feature: the head's input feature of the padded batch (the list P2-P5 for the
                FPN head).
            proposals: per image ``(P_i, 4)`` XYXY input px.
            image_sizes: per image unpadded ``(h, w)`` (clipping of detections).
            targets: in training, per image ``{"boxes": (M_i, 4), "labels": (M_i,) int64}``.

        Returns:
            ``(detections, losses)``. Training: ``([], {"loss_cls", "loss_box"})``. Eval:
            per image ``{"boxes": (D, 4) XYXY input px, "scores": (D,), "labels": (D,)
            int64}`` and ``{}``.
        """
        if self.training:
            if targets is None:
                raise ValueError("RoIHeads.forward: targets are required in training mode")
            boxes, classes, box_targets = self.label_and_sample_proposals(proposals, targets)
            cls_logits, deltas = self.run_box_head(feature, boxes)
            return [], self.losses(cls_logits, deltas, boxes, classes, box_targets)
        cls_logits, deltas = self.run_box_head(feature, proposals)
        return self.inference(cls_logits, deltas, proposals, image_sizes), {}

    def run_box_head(self, feature: torch.Tensor, boxes: List[torch.Tensor]
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Calls the box head on per-image boxes and checks its output shapes.

        The RoIs stay float32 whatever the feature's dtype (under autocast the feature may be
        half, which cannot hold pixel coordinates); the pooling ops take that mix.

        Returns:
            ``cls_logits (R, K+1)`` and ``box_deltas (R, B, 4)`` of the ``R`` boxes, in order.
        """
        device = (feature if isinstance(feature, torch.Tensor) else feature[0]).device
        rois = boxes_to_rois(boxes).to(device=device, dtype=torch.float32)
        cls_logits, deltas = self.box_head(feature, rois)
        r, k = rois.shape[0], self.num_classes
        if cls_logits.shape != (r, k + 1) or deltas.dim() != 3 or deltas.shape[0] != r \
                or deltas.shape[1] not in (1, k) or deltas.shape[2] != 4:
            raise RuntimeError(
                f"box head returned cls_logits {tuple(cls_logits.shape)} and box_deltas "
                f"{tuple(deltas.shape)} for {r} RoIs; RoIHeads(num_classes={k}) needs "
                f"({r}, {k + 1}) and ({r}, 1 or {k}, 4)")
        return cls_logits, deltas

    def label_and_sample_proposals(self, proposals: List[torch.Tensor],
                                   targets: List[Dict[str, torch.Tensor]]):
        """Per image: the training RoIs, their class targets and box targets.

        The GT boxes join the proposals; each candidate is matched to the GT; then
        ``batch_size_per_image`` are sampled (at most ``positive_fraction`` foreground), or,
        under OHEM, every labelled one is kept (``losses`` picks the hardest).

        Returns:
            Lists over images of ``boxes (S_i, 4)`` XYXY input px, ``classes (S_i,)`` int64
            (``K`` = background) and ``box_targets (S_i, 4)`` float32 (zeros for background).
        """
        all_boxes, all_classes, all_targets = [], [], []
        for props, tgt in zip(proposals, targets):
            gt_boxes = tgt["boxes"].to(props)
            gt_labels = tgt["labels"].to(device=props.device, dtype=torch.int64)
            cand = torch.cat((props.detach(), gt_boxes))
            matched, labels, _ = self.matcher(gt_boxes, cand)
            if self.ohem:
                pos = torch.nonzero(labels == 1).flatten()
                neg = torch.nonzero(labels == 0).flatten()
            else:
                pos, neg = self.sampler(labels)
            keep = torch.cat((pos, neg))
            classes = torch.full((keep.numel(),), self.num_classes, dtype=torch.int64,
                                 device=props.device)
            box_targets = cand.new_zeros((keep.numel(), 4), dtype=torch.float32)
            if pos.numel():
                classes[:pos.numel()] = gt_labels[matched[pos]]
                box_targets[:pos.numel()] = self.box_coder.encode(gt_boxes[matched[pos]],
                                                                  cand[pos])
            all_boxes.append(cand[keep])
            all_classes.append(classes)
            all_targets.append(box_targets)
        return all_boxes, all_classes, all_targets

    def per_roi_losses(self, cls_logits: torch.Tensor, deltas: torch.Tensor,
                       classes: torch.Tensor, box_targets: torch.Tensor
                       ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Unreduced ``(R,)`` cross-entropy and ``(R,)`` smooth-L1 (0 for background), in
        float32."""
        cls_logits, deltas = cls_logits.float(), deltas.float()
        ce = F.cross_entropy(cls_logits, classes, reduction="none")
        fg = classes < self.num_classes
        if deltas.shape[1] == 1:
            pred = deltas[:, 0]
        else:
            # Background rows pick class 0's deltas; they are masked out below.
            pred = deltas[torch.arange(deltas.shape[0], device=deltas.device),
                          classes.clamp(max=self.num_classes - 1)]
        box = F.smooth_l1_loss(pred, box_targets.float(), beta=self.smooth_l1_beta,
                               reduction="none").sum(dim=1)
        return ce, box * fg.to(box.dtype)

    def hardest(self, ce: torch.Tensor, box: torch.Tensor, counts: Sequence[int]
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """OHEM: per image (``counts`` RoIs each, in order), the ``batch_size_per_image`` RoIs
        with the largest classification + box loss; the selection needs no gradient."""
        hardness = (ce + box).detach()
        keep, start = [], 0
        for n in counts:
            k = min(n, self.batch_size_per_image)
            keep.append(hardness[start:start + n].topk(k).indices + start)
            start += n
        keep_t = torch.cat(keep)
        return ce[keep_t], box[keep_t]

    def losses(self, cls_logits: torch.Tensor, deltas: torch.Tensor, boxes: List[torch.Tensor],
               classes: List[torch.Tensor], box_targets: List[torch.Tensor]
               ) -> Dict[str, torch.Tensor]:
        """``loss_cls`` and ``loss_box`` over the sampled RoIs, or under OHEM the hardest.

        Args:
            cls_logits, deltas: the box head's outputs for ``torch.cat(boxes)``.
            boxes, classes, box_targets: from :meth:`label_and_sample_proposals`.
        """
        ce, box = self.per_roi_losses(cls_logits, deltas, torch.cat(classes),
                                      torch.cat(box_targets))
        if self.ohem:
            ce, box = self.hardest(ce, box, [b.shape[0] for b in boxes])
        # max(., 1): no RoI at all gives zero losses, never NaN.
        norm = float(max(ce.numel(), 1))
        return {"loss_cls": ce.sum() / norm, "loss_box": box.sum() / norm}

    def inference(self, cls_logits: torch.Tensor, deltas: torch.Tensor,
                  proposals: List[torch.Tensor], image_sizes: List[Tuple[int, int]]
                  ) -> List[Dict[str, torch.Tensor]]:
        """Per-image detections (see the class docstring); scores and boxes in float32.

        Args:
            cls_logits, deltas: the box head's outputs for ``torch.cat(proposals)``.
            proposals: per image ``(P_i, 4)`` XYXY input px.
            image_sizes: per image unpadded ``(h, w)``.
        """
        probs = F.softmax(cls_logits.float(), dim=1)[:, :self.num_classes]
        props = torch.cat(proposals).float()
        boxes = self.box_coder.decode(deltas.float(), props)
        boxes = boxes.expand(-1, self.num_classes, -1)  # class-agnostic: one box for all
        results, start = [], 0
        for props_i, size in zip(proposals, image_sizes):
            n = props_i.shape[0]
            results.append(self._postprocess(clip_boxes(boxes[start:start + n], size),
                                             probs[start:start + n]))
            start += n
        return results

    def _postprocess(self, boxes: torch.Tensor, scores: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Threshold + per-class NMS + top-k of ``boxes (R, K, 4)`` and ``scores (R, K)``."""
        labels = torch.arange(self.num_classes, device=scores.device).expand_as(scores)
        boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
        keep = (scores > self.score_thresh) & nonempty_boxes(boxes)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = ops.batched_nms(boxes, scores, labels, self.nms_thresh)[:self.detections_per_image]
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}
