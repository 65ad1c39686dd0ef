"""Non-maximum suppression: ``nms`` and the per-category ``batched_nms``.

The kernel is ``torch.ops.dcn_det.nms`` (csrc/cpu/nms.cpp); this file registers its fake kernel
(the output length depends on the data, so it is a fresh unbacked size) and validates inputs.
Boxes are XYXY in continuous pixel coordinates; IoU uses area ``(x2-x1)*(y2-y1)``.
"""
import torch
from torch.fx.experimental.symbolic_shapes import guard_or_false

from dcn_det.ops import _validate

_REDUCED = (torch.float16, torch.bfloat16)


@torch.library.register_fake("dcn_det::nms")
def _nms_fake(boxes, scores, iou_threshold):
    torch._check(boxes.dim() == 2 and boxes.size(1) == 4,
                 lambda: f"nms: boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    torch._check(scores.dim() == 1 and scores.size(0) == boxes.size(0),
                 lambda: f"nms: scores must have shape (N,), got {tuple(scores.shape)}")
    num_kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((num_kept,), dtype=torch.int64)


@torch.library.register_fake("dcn_det::_batched_nms")
def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
    torch._check(boxes.dim() == 2 and boxes.size(1) == 4,
                 lambda: f"_batched_nms: boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    torch._check(scores.dim() == 1 and scores.size(0) == boxes.size(0),
                 lambda: f"_batched_nms: scores must have shape (N,), got {tuple(scores.shape)}")
    torch._check(idxs.dim() == 1 and idxs.size(0) == boxes.size(0),
                 lambda: f"_batched_nms: idxs must have shape (N,), got {tuple(idxs.shape)}")
    num_kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((num_kept,), dtype=torch.int64)


def _check_boxes_scores(boxes, scores) -> None:
    _validate.check_tensor(boxes, "boxes", 2, "(N, 4) XYXY")
    if boxes.size(1) != 4:
        raise ValueError(f"boxes must have shape (N, 4) XYXY, got shape {tuple(boxes.shape)}")
    _validate.check_floating(boxes, "boxes")
    _validate.check_tensor(scores, "scores", 1, "(N,)")
    if scores.size(0) != boxes.size(0):
        raise ValueError(f"scores must have shape (N,) with N = boxes.size(0) = {boxes.size(0)}, "
                         f"got shape {tuple(scores.shape)}")
    _validate.check_floating(scores, "scores")
    if scores.device != boxes.device:
        raise ValueError(f"scores is on {scores.device} but boxes is on {boxes.device}; "
                         "both must be on the same device")


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: keeps boxes in decreasing score order, dropping any whose IoU with an
    already kept box is greater than ``iou_threshold``.

    Args:
        boxes: ``(N, 4)`` XYXY, continuous pixel coordinates.
        scores: ``(N,)``, any floating dtype.
        iou_threshold: suppress when IoU > this.

    Returns:
        ``(K,)`` int64 indices into ``boxes`` of the kept boxes, by decreasing score (equal
        scores: lower index first). A zero-area box never suppresses nor is suppressed.
    """
    _check_boxes_scores(boxes, scores)
    # The kernel takes one dtype for both; promoting loses neither boxes nor score order.
    dtype = torch.promote_types(boxes.dtype, scores.dtype)
    if boxes.device.type == "cpu" and dtype in _REDUCED:
        dtype = torch.float32  # no half kernel on CPU
    return torch.ops.dcn_det.nms(boxes.to(dtype), scores.to(dtype), float(iou_threshold))


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """NMS within each category: boxes with different ``idxs`` never suppress each other.

    Two equivalent paths:

    - per category (CPU, eager and under ``torch.compile``/``torch.export``): the native
      ``_batched_nms`` operator runs the greedy NMS on each category's boxes separately, in
      float64, costing the sum of n_c^2 over the categories rather than N^2 (ONNX maps it to a
      class-aware ``NonMaxSuppression``, so no coordinate is shifted);
    - class offset (CUDA, which has no ``_batched_nms`` kernel): each category is moved to its
      own disjoint region of the plane (an offset of ``idxs * (max - min + 1)`` on every
      coordinate) and a single :func:`nms` runs over all. The shift is done in float64 so that
      large offsets do not round the boxes.

    Both visit boxes by decreasing score (ties: lower index first) and compute IoU in float64,
    so they keep the same boxes in the same order whenever the float64 shift is exact (float32
    and half boxes of ordinary magnitudes; tests/ops/test_nms.py checks it).

    Args:
        boxes: ``(N, 4)`` XYXY.
        scores: ``(N,)``.
        idxs: ``(N,)`` integer category (or image) of each box.
        iou_threshold: suppress when IoU > this.

    Returns:
        ``(K,)`` int64 indices of the kept boxes, by decreasing score.
    """
    _check_boxes_scores(boxes, scores)
    _validate.check_tensor(idxs, "idxs", 1, "(N,)")
    if idxs.size(0) != boxes.size(0):
        raise ValueError(f"idxs must have shape (N,) with N = boxes.size(0) = {boxes.size(0)}, "
                         f"got shape {tuple(idxs.shape)}")
    if idxs.is_floating_point() or idxs.is_complex() or idxs.dtype == torch.bool:
        raise ValueError(f"idxs must be an integer tensor, got dtype {idxs.dtype}")
    if idxs.device != boxes.device:
        raise ValueError(f"idxs is on {idxs.device} but boxes is on {boxes.device}; "
                         "both must be on the same device")
    # guard_or_false: under torch.export the box count is data-dependent (unbacked); the
    # branch is then treated as "not empty" and the code below is also correct for N = 0.
    if guard_or_false(boxes.numel() == 0):
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if boxes.device.type == "cpu":
        return torch.ops.dcn_det._batched_nms(boxes, scores, idxs, float(iou_threshold))
    return _batched_nms_offset(boxes, scores, idxs, iou_threshold)


def _batched_nms_offset(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                        iou_threshold: float) -> torch.Tensor:
    """The class-offset path of :func:`batched_nms` (inputs already checked)."""
    boxes64 = boxes.to(torch.float64)
    # max - min + 1 (not just max + 1) keeps categories apart when coordinates are negative.
    flat = torch.cat([boxes64.reshape(-1), boxes64.new_zeros(1)])  # max/min of empty fail
    span = flat.max() - flat.min() + 1
    shifted = boxes64 + (idxs.to(torch.float64) * span)[:, None]
    return nms(shifted, scores, iou_threshold)
