"""Box regression coder, IoU matcher and balanced sampler shared by the RPN and RoI heads."""
import math
from typing import Sequence, Tuple

import torch

from dcn_det.structures import box_iou

# The official code clamps predicted log-scale deltas so exp() cannot overflow: a box may
# grow at most 1000/16 times relative to its reference box.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """Encodes boxes relative to reference boxes as ``(dx, dy, dw, dh)`` and back.

    ``dx = (gx - px) / pw / std_x``, ``dy = (gy - py) / ph / std_y``,
    ``dw = log(gw / pw) / std_w``, ``dh = log(gh / ph) / std_h`` with centres ``(px, py)`` and
    sizes ``pw = x2 - x1``, ``ph = y2 - y1`` in continuous XYXY pixels (no "+1"). Dividing by
    the stds is the official R-FCN / Faster R-CNN target normalisation (stds
    ``(0.1, 0.1, 0.2, 0.2)`` for the RoI head, ``(1, 1, 1, 1)`` for the RPN).

    Args:
        stds: per-coordinate normalisers ``(std_x, std_y, std_w, std_h)``, all > 0.
        scale_clamp: upper bound applied to ``dw``/``dh`` (after un-normalising) in decode.
    """

    def __init__(self, stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 scale_clamp: float = DEFAULT_SCALE_CLAMP):
        if len(stds) != 4 or any(float(s) <= 0 for s in stds):
            raise ValueError(f"BoxCoder stds must be 4 positive numbers, got {list(stds)}")
        self.stds = tuple(float(s) for s in stds)
        self.scale_clamp = scale_clamp

    def encode(self, boxes: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Deltas ``(N, 4)`` that turn ``reference (N, 4)`` into ``boxes (N, 4)``.

        Both must have positive width and height (callers only encode foreground matches,
        whose IoU > 0 guarantees it).
        """
        pw = reference[:, 2] - reference[:, 0]
        ph = reference[:, 3] - reference[:, 1]
        px = reference[:, 0] + 0.5 * pw
        py = reference[:, 1] + 0.5 * ph
        gw = boxes[:, 2] - boxes[:, 0]
        gh = boxes[:, 3] - boxes[:, 1]
        gx = boxes[:, 0] + 0.5 * gw
        gy = boxes[:, 1] + 0.5 * gh
        sx, sy, sw, sh = self.stds
        return torch.stack(((gx - px) / pw / sx, (gy - py) / ph / sy,
                            torch.log(gw / pw) / sw, torch.log(gh / ph) / sh), dim=1)

    def decode(self, deltas: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Applies ``deltas (N, ..., 4)`` to ``reference (N, 4)`` -> boxes ``(N, ..., 4)``.

        The middle dimensions (e.g. one set of deltas per class) broadcast against the
        single reference box of each row. Computed in float32 or wider, whatever the dtype
        of ``deltas``.
        """
        # At least float32: half precision (under autocast) cannot hold pixel coordinates.
        dtype = torch.promote_types(deltas.dtype, torch.float32)
        deltas, ref = deltas.to(dtype), reference.to(dtype)
        extra = deltas.dim() - 2
        shape = (ref.shape[0],) + (1,) * extra
        pw = (ref[:, 2] - ref[:, 0]).view(shape)
        ph = (ref[:, 3] - ref[:, 1]).view(shape)
        px = ref[:, 0].view(shape) + 0.5 * pw
        py = ref[:, 1].view(shape) + 0.5 * ph
        sx, sy, sw, sh = self.stds
        dx = deltas[..., 0] * sx
        dy = deltas[..., 1] * sy
        dw = (deltas[..., 2] * sw).clamp(max=self.scale_clamp)
        dh = (deltas[..., 3] * sh).clamp(max=self.scale_clamp)
        cx = px + dx * pw
        cy = py + dy * ph
        w = pw * torch.exp(dw)
        h = ph * torch.exp(dh)
        return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


class Matcher:
    """Assigns each candidate box (anchor or proposal) to a ground-truth box by IoU.

    Label of a candidate with best IoU ``m`` over the GT boxes:
    ``1`` (foreground) if ``m >= fg_iou``; ``0`` (background) if ``bg_iou_lo <= m < bg_iou``;
    ``-1`` (ignored) otherwise. With ``allow_low_quality_matches`` every candidate whose IoU
    with some GT equals that GT's best IoU (ties included) is also foreground, so each GT
    gets at least one positive anchor (the official RPN rule). A GT whose best IoU is 0 is
    skipped by that rule: otherwise every non-overlapping candidate would tie at 0 and become
    positive.

    Args:
        fg_iou: foreground threshold.
        bg_iou: background upper bound (exclusive); must be <= ``fg_iou``.
        allow_low_quality_matches: the best-candidate-per-GT rule above.
        bg_iou_lo: background lower bound (inclusive); candidates below it are ignored.
    """

    def __init__(self, fg_iou: float, bg_iou: float, allow_low_quality_matches: bool = False,
                 bg_iou_lo: float = 0.0):
        if not 0.0 <= bg_iou_lo <= bg_iou <= fg_iou <= 1.0:
            raise ValueError(
                "Matcher thresholds need 0 <= bg_iou_lo <= bg_iou <= fg_iou <= 1, got "
                f"bg_iou_lo={bg_iou_lo}, bg_iou={bg_iou}, fg_iou={fg_iou}")
        self.fg_iou = fg_iou
        self.bg_iou = bg_iou
        self.bg_iou_lo = bg_iou_lo
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, gt_boxes: torch.Tensor, boxes: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Matches ``boxes (N, 4)`` against ``gt_boxes (M, 4)``.

        Returns:
            ``matched_idxs (N,)`` int64 index of the best GT (0 when ``M == 0``; meaningful
            only for foreground), ``labels (N,)`` int8 in {1, 0, -1} and
            ``max_iou (N,)`` the best IoU (0 when ``M == 0``).
        """
        n = boxes.shape[0]
        if gt_boxes.shape[0] == 0:
            # No objects: everything is background as long as IoU 0 is in the bg range.
            max_iou = boxes.new_zeros(n)
            labels = torch.full((n,), 0 if self.bg_iou_lo <= 0.0 < self.bg_iou else -1,
                                dtype=torch.int8, device=boxes.device)
            return torch.zeros(n, dtype=torch.int64, device=boxes.device), labels, max_iou
        iou = box_iou(gt_boxes, boxes)  # (M, N)
        max_iou, matched_idxs = iou.max(dim=0)
        labels = torch.full((n,), -1, dtype=torch.int8, device=boxes.device)
        labels[(max_iou >= self.bg_iou_lo) & (max_iou < self.bg_iou)] = 0
        labels[max_iou >= self.fg_iou] = 1
        if self.allow_low_quality_matches and n > 0:
            best_per_gt = iou.max(dim=1, keepdim=True).values  # (M, 1)
            ties = (iou == best_per_gt) & (best_per_gt > 0)
            labels[ties.any(dim=0)] = 1
        return matched_idxs, labels, max_iou


class BalancedSampler:
    """Randomly samples a fixed-size mini-batch with a bounded foreground fraction.

    Up to ``round(batch_size * positive_fraction)`` foreground candidates are drawn, and the
    rest of the batch is filled with background; when there are too few of either, the batch
    is smaller (no repetition, unlike the official code's padding).

    Args:
        batch_size: candidates per image.
        positive_fraction: the largest fraction of foreground in the batch.
    """

    def __init__(self, batch_size: int, positive_fraction: float):
        if batch_size < 1:
            raise ValueError(f"BalancedSampler batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(
                f"BalancedSampler positive_fraction must be in [0, 1], got {positive_fraction}")
        self.batch_size = batch_size
        self.positive_fraction = positive_fraction

    def __call__(self, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Samples from ``labels (N,)`` in {1, 0, -1}.

        Returns:
            ``(pos_idx, neg_idx)``: int64 indices into ``labels`` of the sampled foreground
            and background candidates.
        """
        pos = torch.nonzero(labels == 1).flatten()
        neg = torch.nonzero(labels == 0).flatten()
        num_pos = min(pos.numel(), int(round(self.batch_size * self.positive_fraction)))
        num_neg = min(neg.numel(), self.batch_size - num_pos)
        pos = pos[torch.randperm(pos.numel(), device=pos.device)[:num_pos]]
        neg = neg[torch.randperm(neg.numel(), device=neg.device)[:num_neg]]
        return pos, neg
