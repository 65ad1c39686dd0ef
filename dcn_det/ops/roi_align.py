"""RoIAlign (torchvision semantics): ``roi_align`` and the ``RoIAlign`` module.

The kernel is ``torch.ops.dcn_det.roi_align`` (csrc/cpu/roi_align.cpp). This file registers its
fake kernel (so ``torch.compile``/``torch.export`` can trace it), its autograd formula and its
autocast policy, and wraps it with argument checks.

Coordinate frame: boxes are XYXY in input-image pixels; ``spatial_scale`` maps them onto the
feature map (e.g. 1/16 for a stride-16 map). With ``aligned=True`` a box's pixel-continuous
coordinates are shifted by -0.5 so that a box [0, 0, 2, 2] on a stride-1 map covers exactly
pixels 0 and 1; ``aligned=False`` is the legacy Mask R-CNN behaviour.
"""
from typing import List, Sequence, Tuple, Union

import torch
from torch import nn

from dcn_det.ops import _validate

_REDUCED = (torch.float16, torch.bfloat16)


@torch.library.register_fake("dcn_det::roi_align")
def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                    aligned):
    torch._check(rois.dim() == 2 and rois.size(1) == 5,
                 lambda: f"roi_align: rois must have shape (R, 5), got {tuple(rois.shape)}")
    torch._check(input.dtype == rois.dtype,
                 lambda: f"roi_align: rois has dtype {rois.dtype} but input has {input.dtype}")
    return input.new_empty((rois.size(0), input.size(1), pooled_height, pooled_width))


@torch.library.register_fake("dcn_det::_roi_align_backward")
def _roi_align_backward_fake(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size,
                             channels, height, width, sampling_ratio, aligned):
    return grad.new_empty((batch_size, channels, height, width))


def _setup_context(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.input_shape = input.shape
    ctx.params = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


def _backward(ctx, grad):
    (rois,) = ctx.saved_tensors
    spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = ctx.params
    batch_size, channels, height, width = ctx.input_shape
    grad_input = torch.ops.dcn_det._roi_align_backward(
        grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height,
        width, sampling_ratio, aligned)
    # Boxes get no gradient (as in torchvision): the output is piecewise smooth in them, but
    # detectors treat proposals as constants.
    return grad_input, None, None, None, None, None, None


torch.library.register_autograd("dcn_det::roi_align", _backward, setup_context=_setup_context)
# There is no half kernel on CPU: under CPU autocast the op runs in float32.
torch.library.register_autocast("dcn_det::roi_align", "cpu", torch.float32)


def _boxes_to_rois(boxes: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
    """Returns ``(R, 5)`` rois from an ``(R, 5)`` tensor or a list of per-image ``(Ri, 4)``."""
    if isinstance(boxes, torch.Tensor):
        _validate.check_rois(boxes, "boxes")
        return boxes
    if not isinstance(boxes, (list, tuple)):
        raise ValueError(
            "boxes must be an (R, 5) tensor [batch_index, x1, y1, x2, y2] or a list of (Ri, 4) "
            f"XYXY tensors, one per image; got {type(boxes).__name__}")
    if len(boxes) == 0:
        raise ValueError("boxes is an empty list; give one (Ri, 4) tensor per image")
    for i, b in enumerate(boxes):
        _validate.check_tensor(b, f"boxes[{i}]", 2, "(Ri, 4) XYXY")
        if b.size(1) != 4:
            raise ValueError(f"boxes[{i}] must have shape (Ri, 4) XYXY, got {tuple(b.shape)}")
        _validate.check_same(boxes[0], "boxes[0]", [(f"boxes[{i}]", b)])
    parts = [torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)]
    return torch.cat(parts, dim=0)


def roi_align(input: torch.Tensor, boxes: Union[torch.Tensor, List[torch.Tensor]],
              output_size: Union[int, Tuple[int, int]], spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """Pools each box of ``input`` into a fixed grid by averaging bilinear samples.

    Args:
        input: ``(N, C, H, W)`` feature map, float32/float64 (float16/bfloat16 are computed in
            float32 on CPU and returned in the input's dtype).
        boxes: ``(R, 5)`` rows ``[batch_index, x1, y1, x2, y2]``, or a list of N ``(Ri, 4)``
            XYXY tensors (image ``i`` gets batch index ``i``); input-image pixels, same dtype
            and device as ``input``.
        output_size: ``PH`` or ``(PH, PW)``, the pooled grid.
        spatial_scale: feature-map size / input-image size (e.g. 1/16).
        sampling_ratio: samples per bin along each axis; ``<= 0`` uses
            ``ceil(roi_size / output_size)`` per RoI (adaptive).
        aligned: shift box corners by -0.5 feature pixels (pixel-exact alignment).

    Returns:
        ``(R, C, PH, PW)``, in the dtype of ``input``. A sample outside ``[-1, H] x [-1, W]``
        contributes 0; only ``input`` receives a gradient.
    """
    _validate.check_tensor(input, "input", 4, "(N, C, H, W)")
    _validate.check_floating(input, "input")
    rois = _boxes_to_rois(boxes)
    pooled_height, pooled_width = _validate.pair(output_size, "output_size")
    if pooled_height <= 0 or pooled_width <= 0:
        raise ValueError(f"output_size must be positive, got {output_size!r}")
    if not isinstance(sampling_ratio, int):
        raise ValueError(f"sampling_ratio must be an int, got {sampling_ratio!r}")
    if not spatial_scale > 0:
        raise ValueError(f"spatial_scale must be > 0, got {spatial_scale!r}")
    if input.device.type == "cpu" and input.dtype in _REDUCED:
        # No half kernel on CPU: compute in float32 (boxes of any floating dtype are accepted,
        # as they would be under autocast) and hand back the caller's dtype.
        _validate.check_floating(rois, "boxes")
        _validate.check_same(input.float(), "input", [("boxes", rois.float())])
        out = torch.ops.dcn_det.roi_align(input.float(), rois.float(), float(spatial_scale),
                                          pooled_height, pooled_width, sampling_ratio,
                                          bool(aligned))
        return out.to(input.dtype)
    _validate.check_same(input, "input", [("boxes", rois)])
    return torch.ops.dcn_det.roi_align(input, rois, float(spatial_scale), pooled_height,
                                       pooled_width, sampling_ratio, bool(aligned))


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align`; ``forward(input, boxes)`` with the same shapes.

    Args:
        output_size: ``PH`` or ``(PH, PW)``.
        spatial_scale: feature-map size / input-image size.
        sampling_ratio: samples per bin and axis, ``<= 0`` for adaptive.
        aligned: pixel-exact alignment (see :func:`roi_align`).
    """

    def __init__(self, output_size: Union[int, Tuple[int, int]], spatial_scale: float,
                 sampling_ratio: int, aligned: bool = False):
        super().__init__()
        self.output_size = _validate.pair(output_size, "output_size")
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def forward(self, input: torch.Tensor,
                boxes: Union[torch.Tensor, List[torch.Tensor]]) -> torch.Tensor:
        """``input (N, C, H, W)``, ``boxes (R, 5)`` or list of ``(Ri, 4)`` -> ``(R, C, PH, PW)``."""
        return roi_align(input, boxes, self.output_size, self.spatial_scale,
                         self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")
