"""Deployment graphs: ``torch.export`` programs and ONNX models (inference files are
:mod:`dcn_det.io.model_file`).

The exported program (``torch.export``) and the ONNX model take ONE image: a uint8 ``(3, H, W)``
RGB tensor that is already resized (the Predictor's resize; see :mod:`dcn_det.predictor`), and
return ``(boxes (D, 4) float32 XYXY px of that input image, scores (D,), labels (D,) int64)``.
Mapping boxes back to the original image is the caller's job (multiply by the size ratios).
H and W are dynamic (``torch.export.Dim``, 32..4096) unless ``dynamic_size=False``; D is
data-dependent (score threshold and NMS), which ``torch.export`` represents with unbacked sizes.
So the model code on that path must never branch in Python on a data-dependent size (use
``guard_or_false``) nor turn the image size into a Python ``int`` (that fixes H and W); the
``dcn_det`` ops all have fake kernels (``nms`` allocates a data-dependent output). Batches of
several images are not exported: the detector takes a Python list of differently sized
images, which a program cannot.
"""
import io
import logging
import os
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from dcn_det.io.atomic import write_bytes

logger = logging.getLogger(__name__)

# Image sides allowed by the dynamic-shape export; the lower bound keeps H, W >= the total
# stride so every feature map has at least one cell.
MIN_SIDE, MAX_SIDE = 32, 4096


class SingleImageDetector(nn.Module):
    """Adapts a detector (list-of-images forward) to one image tensor in, three tensors out.

    Args:
        model: a detector in eval mode with the ``TwoStageDetector`` eval contract.

    ``forward(image uint8 (3, H, W) RGB) -> (boxes (D, 4) XYXY px of image, scores (D,),
    labels (D,) int64)``.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        det = self.model([image])[0]
        return det["boxes"], det["scores"], det["labels"]


def _check_example(model: nn.Module, image: torch.Tensor) -> None:
    if model.training:
        raise ValueError("export needs the model in eval mode (call model.eval()); the training "
                         "forward returns losses")
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3 \
            or image.dtype != torch.uint8:
        got = (f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor)
               else type(image).__name__)
        raise ValueError(f"example_image must be a uint8 (3, H, W) RGB tensor, got {got}")
    if not (MIN_SIDE <= image.shape[1] <= MAX_SIDE and MIN_SIDE <= image.shape[2] <= MAX_SIDE):
        raise ValueError(f"example_image sides must be in [{MIN_SIDE}, {MAX_SIDE}], got "
                         f"{tuple(image.shape[1:])}")


def export_program(model: nn.Module, example_image: torch.Tensor, output: Optional[str] = None,
                   dynamic_size: bool = True) -> "torch.export.ExportedProgram":
    """Exports the detector with ``torch.export`` (one image in; see the module docstring).

    Args:
        model: the detector, in eval mode, on the device the program should run on.
        example_image: uint8 ``(3, H, W)`` RGB tensor used for tracing (a resized image).
        output: where to ``torch.export.save`` the program (``.pt2``, replaced atomically by
            :mod:`dcn_det.io.atomic`); None = do not save.
        dynamic_size: export H and W as dynamic dimensions; False fixes them to the example's.

    Returns:
        The ``ExportedProgram``; ``program.module()(image)`` runs it.

    Raises:
        ValueError: the model is in training mode or the example image is malformed.
        torch export errors: when an op on the path cannot be traced (propagated unchanged,
            they name the op and the source line).
    """
    _check_example(model, example_image)
    dynamic_shapes = None
    if dynamic_size:
        h = torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE)
        w = torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)
        dynamic_shapes = {"image": {1: h, 2: w}}
    with torch.no_grad():
        program = torch.export.export(SingleImageDetector(model), (example_image,),
                                      dynamic_shapes=dynamic_shapes)
    if output is not None:
        buf = io.BytesIO()
        torch.export.save(program, buf)
        write_bytes(output, buf.getbuffer(), what="exported program")
    return program


def _deform_psroi_schema():
    """The ONNX schema of the custom op ``dcn_det::DeformPSROIPool`` (version 1)."""
    from onnx.defs import OpSchema

    param = OpSchema.FormalParameter
    optional = OpSchema.FormalParameterOption.Optional
    attrs = [OpSchema.Attribute(n, OpSchema.AttrType.FLOAT, "") for n in
             ("spatial_scale", "trans_std")]
    attrs += [OpSchema.Attribute(n, OpSchema.AttrType.INT, "") for n in
              ("output_dim", "group_size", "pooled_size", "part_size", "sample_per_part")]
    return OpSchema(
        "DeformPSROIPool", "dcn_det", 1,
        doc="Deformable position-sensitive RoI pooling (dcn_det DESIGN.md section 4.2).",
        inputs=[param("input", "T"), param("rois", "T"), param("offset", "T", param_option=optional)],
        outputs=[param("output", "T"), param("count", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(double)", "tensor(float16)"], "")],
        attributes=attrs)


def _onnx_translation_table() -> Dict[Any, Any]:
    """Maps the ``torch.ops.dcn_det`` operators to ONNX (onnxscript functions, traced).

    Tested (tests/test_export.py) with onnx, onnxscript and onnxruntime: ``DeformConv`` matches
    our op in onnxruntime, and the real detectors export with the mapping below:

    - ``deform_conv2d`` -> ``DeformConv`` (opset 19): same offset layout as torchvision
      (``(dy, dx)`` pairs per tap and offset group), same bilinear sampling with zero padding.
    - ``roi_align`` -> ``RoiAlign`` (opset 16+): ``aligned=True`` is ``half_pixel``,
      ``False`` is ``output_half_pixel``; ``sampling_ratio=-1`` (adaptive) is ONNX's 0.
    - ``nms`` -> ``NonMaxSuppression`` on one batch and one class, keeping column 2 (box index)
      of its ``(K, 3)`` output, which runtimes emit in decreasing score order.
    - ``deform_psroi_pool`` -> custom ``dcn_det::DeformPSROIPool`` (domain ``dcn_det``,
      version 1): inputs ``(input, rois (R, 5), offset or empty)``, float attributes
      ``spatial_scale, trans_std``, int attributes ``output_dim, group_size, pooled_size,
      part_size, sample_per_part``, outputs ``(output (R, output_dim, P, P), count)`` with
      exactly the semantics of DESIGN.md section 4.2. A runtime needs a custom-op library for it.
    - ``deform_max_pool2d`` -> standard operators only (see :func:`_deform_max_pool2d_onnx`):
      ``GridSample`` (opset 16+) on the input padded by ``Pad(mode="edge")``, ``Where`` to drop
      the skipped taps, ``ReduceMax`` / ``ArgMax`` over the taps.
    """
    import onnxscript
    from onnxscript import opset19 as op

    import dcn_det.ops  # noqa: F401  (registers torch.ops.dcn_det)

    int64 = 7  # onnx.TensorProto.INT64
    custom = onnxscript.values.Opset("dcn_det", 1)

    def ints(*v):
        return op.Constant(value_ints=list(v))

    def deform_conv2d(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w,
                      dilation_h, dilation_w, groups, offset_groups):
        return op.DeformConv(input, weight, offset, bias, mask,
                             dilations=[dilation_h, dilation_w], group=groups,
                             offset_group=offset_groups, pads=[pad_h, pad_w, pad_h, pad_w],
                             strides=[stride_h, stride_w])

    def roi_align(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio,
                  aligned):
        batch = op.Cast(op.Reshape(op.Slice(rois, ints(0), ints(1), ints(1)), ints(-1)), to=int64)
        boxes = op.Slice(rois, ints(1), ints(5), ints(1))
        return op.RoiAlign(input, boxes, batch, mode="avg", output_height=pooled_height,
                           output_width=pooled_width, sampling_ratio=max(sampling_ratio, 0),
                           spatial_scale=spatial_scale,
                           coordinate_transformation_mode="half_pixel" if aligned
                           else "output_half_pixel")

    def nms(boxes, scores, iou_threshold):
        max_out = op.Reshape(op.Size(scores), ints(1))
        selected = op.NonMaxSuppression(op.Unsqueeze(boxes, ints(0)),
                                        op.Unsqueeze(scores, ints(0, 1)), max_out,
                                        op.Constant(value_floats=[iou_threshold]),
                                        center_point_box=0)
        return op.Reshape(op.Slice(selected, ints(2), ints(3), ints(1)), ints(-1))

    # onnxscript needs a schema to build a node; a custom-domain op has none until we give it.
    deform_psroi = onnxscript.values.Op(custom, "DeformPSROIPool", _deform_psroi_schema())

    def deform_psroi_pool(input, rois, offset, spatial_scale, output_dim, group_size,
                          pooled_size, part_size, sample_per_part, trans_std):
        return deform_psroi(input, rois, offset, spatial_scale=spatial_scale,
                            output_dim=output_dim, group_size=group_size,
                            pooled_size=pooled_size, part_size=part_size,
                            sample_per_part=sample_per_part, trans_std=trans_std, _outputs=2)

    ops = torch.ops.dcn_det
    return {ops.deform_conv2d.default: deform_conv2d, ops.roi_align.default: roi_align,
            ops.nms.default: nms, ops.deform_psroi_pool.default: deform_psroi_pool,
            ops.deform_max_pool2d.default: _deform_max_pool2d_onnx}


def _deform_max_pool2d_onnx(input, offset, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                            dilation_h, dilation_w, offset_groups):
    """``dcn_det::deform_max_pool2d`` in standard ONNX operators (opset 19), traced by onnxscript.

    The graph of :mod:`dcn_det.ops.deform_max_pool_composite`: the sample points of every tap
    (N, G, K, H_out, W_out) from the offsets, the skipped taps (outside ``(-1, H) x (-1, W)``),
    the clamped points sampled by ``GridSample(align_corners=1)`` on the input padded with its
    last row and column to ``2**m + 1`` rows and columns (so integer coordinates stay exact
    and the sample at row ``H-1`` is that row), ``Where`` -inf on skipped taps, ``ReduceMax``
    and ``ArgMax`` over the taps, and 0 / -1 where every tap is skipped. Input sizes may be
    dynamic: the padding is computed in the graph.

    Returns:
        ``(output (N, C, H_out, W_out), argmax (N, C, H_out, W_out) int64)``.
    """
    from onnxscript import opset19 as op

    int64, float32 = 7, 1  # onnx.TensorProto
    taps, groups = kernel_h * kernel_w, offset_groups

    def ints(*v):
        return op.Constant(value_ints=list(v))

    def scalar(v):  # a float constant in the input's dtype
        return op.CastLike(op.Constant(value_float=float(v)), input)

    shape, off_shape = op.Shape(input), op.Shape(offset)
    n, c, h, w = (op.Slice(shape, ints(i), ints(i + 1)) for i in range(4))
    h_out, w_out = (op.Slice(off_shape, ints(i), ints(i + 1)) for i in (2, 3))

    # Sample points (N, G, K, H_out, W_out): integer grid + (dy, dx).
    off = op.Reshape(offset, op.Concat(n, ints(groups, taps, 2), h_out, w_out, axis=0))
    dy = op.Squeeze(op.Slice(off, ints(0), ints(1), ints(3)), ints(3))
    dx = op.Squeeze(op.Slice(off, ints(1), ints(2), ints(3)), ints(3))
    rows = op.Range(op.Constant(value_int=0), op.Squeeze(h_out), op.Constant(value_int=1))
    cols = op.Range(op.Constant(value_int=0), op.Squeeze(w_out), op.Constant(value_int=1))
    tap_y = op.Reshape(ints(*[(k // kernel_w) * dilation_h for k in range(taps)]),
                       ints(taps, 1, 1))
    tap_x = op.Reshape(ints(*[(k % kernel_w) * dilation_w for k in range(taps)]),
                       ints(taps, 1, 1))
    base_y = op.Add(op.Reshape(op.Sub(op.Mul(rows, ints(stride_h)), ints(pad_h)),
                               ints(1, -1, 1)), tap_y)
    base_x = op.Add(op.Reshape(op.Sub(op.Mul(cols, ints(stride_w)), ints(pad_w)),
                               ints(1, 1, -1)), tap_x)
    y = op.Add(op.CastLike(base_y, input), dy)
    x = op.Add(op.CastLike(base_x, input), dx)

    hf, wf = op.CastLike(h, input), op.CastLike(w, input)
    minus_one, zero, one = scalar(-1), scalar(0), scalar(1)
    kept = op.And(op.And(op.Greater(y, minus_one), op.Less(y, hf)),
                  op.And(op.Greater(x, minus_one), op.Less(x, wf)))
    # Skipped points (NaN included) go to pixel 0 so GridSample never sees them.
    yc = op.Where(kept, op.Max(op.Min(y, op.Sub(hf, one)), zero), zero)
    xc = op.Where(kept, op.Min(op.Max(x, zero), op.Sub(wf, one)), zero)

    def pow2_at_least(size):  # 2**ceil(log2(size)) as float32 (a larger power is fine too)
        size_f = op.Cast(size, to=float32)
        return op.Pow(op.Constant(value_float=2.0),
                      op.Ceil(op.Div(op.Log(size_f), op.Log(op.Constant(value_float=2.0)))))

    span_h, span_w = pow2_at_least(h), pow2_at_least(w)  # S - 1
    side_h = op.Add(op.Cast(span_h, to=int64), ints(1))
    side_w = op.Add(op.Cast(span_w, to=int64), ints(1))
    pads = op.Concat(ints(0, 0, 0, 0, 0, 0), op.Sub(side_h, h), op.Sub(side_w, w), axis=0)
    padded = op.Pad(input, pads, mode="edge")
    half_h = op.CastLike(op.Div(span_h, op.Constant(value_float=2.0)), input)
    half_w = op.CastLike(op.Div(span_w, op.Constant(value_float=2.0)), input)
    grid = op.Concat(op.Unsqueeze(op.Sub(op.Div(xc, half_w), one), ints(-1)),
                     op.Unsqueeze(op.Sub(op.Div(yc, half_h), one), ints(-1)), axis=-1)

    per_group = op.Div(c, ints(groups))
    grid = op.Reshape(grid, op.Concat(op.Mul(n, ints(groups)), op.Mul(h_out, ints(taps)),
                                      w_out, ints(2), axis=0))
    planes = op.Reshape(padded, op.Concat(op.Mul(n, ints(groups)), per_group, side_h, side_w,
                                          axis=0))
    values = op.GridSample(planes, grid, align_corners=1, mode="bilinear", padding_mode="zeros")
    values = op.Reshape(values, op.Concat(n, ints(groups), per_group, ints(taps), h_out, w_out,
                                          axis=0))
    masked = op.Where(op.Unsqueeze(kept, ints(2)), values, scalar(float("-inf")))
    best = op.ReduceMax(masked, ints(3), keepdims=0)
    arg = op.ArgMax(masked, axis=3, keepdims=0, select_last_index=0)
    any_kept = op.Unsqueeze(op.Greater(op.ReduceMax(op.Cast(kept, to=float32), ints(2),
                                                    keepdims=0), op.Constant(value_float=0.0)),
                            ints(2))
    best = op.Where(any_kept, best, zero)
    arg = op.Where(any_kept, arg, op.Constant(value_int=-1))
    out_shape = op.Concat(n, c, h_out, w_out, axis=0)
    return op.Reshape(best, out_shape), op.Reshape(arg, out_shape)


def export_onnx(model: nn.Module, example_image: torch.Tensor, output: str,
                opset: int = 19) -> str:
    """Exports the detector to ONNX (one image in; see the module docstring).

    The ``dcn_det`` operators map as :func:`_onnx_translation_table` describes: deformable
    conv to the standard ``DeformConv`` (hence opset >= 19), deformable max pooling to standard
    operators (``GridSample`` and reductions), deformable PS-RoI pooling to the documented
    custom operator ``dcn_det::DeformPSROIPool``.

    Raises:
        RuntimeError: ``onnx`` or ``onnxscript`` is not installed (both are optional).
        ValueError: ``opset < 19``, a model in training mode or a malformed example image.
    """
    if opset < 19:
        raise ValueError(f"opset must be >= 19 (DeformConv first appears in opset 19), got {opset}")
    _check_example(model, example_image)
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise RuntimeError("ONNX export needs the optional packages 'onnx' and 'onnxscript' "
                           f"(pip install onnx onnxscript): {e}") from e
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    side = {1: torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE),
            2: torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)}
    with torch.no_grad():
        torch.onnx.export(SingleImageDetector(model), (example_image,), output, dynamo=True,
                          opset_version=opset, input_names=["image"],
                          output_names=["boxes", "scores", "labels"],
                          dynamic_shapes={"image": side},
                          custom_translation_table=_onnx_translation_table())
    return output
