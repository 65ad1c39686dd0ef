"""ONNX models of a detector, in standard operators only (any ONNX runtime loads them).

The model takes and returns what the ``torch.export`` program does (see
:mod:`dcn_det.export.program`): input ``image`` uint8 ``(3, H, W)`` RGB, already resized, H and
W dynamic; outputs ``boxes`` (D, 4) float32 XYXY px of that image, ``scores`` (D,) float32,
``labels`` (D,) int64. The ONNX model is translated from the program, and the ``dcn_det``
operators map as :func:`onnx_translation_table` lists (:mod:`dcn_det.export.onnx_ops`).
"""
import os
from typing import Any, Dict

import torch
from torch import nn

from dcn_det.export.program import _check_example, export_program
from dcn_det.io.atomic import write_bytes

MIN_OPSET = 19  # DeformConv first appears in opset 19


def onnx_translation_table() -> Dict[Any, Any]:
    """Maps the ``torch.ops.dcn_det`` operators to their standard-ONNX translations.

    - ``deform_conv2d`` -> ``DeformConv``;
    - ``roi_align`` -> ``RoiAlign``;
    - ``nms`` -> ``NonMaxSuppression`` (float32), ``_batched_nms`` -> ``NonMaxSuppression``
      with one class per category, then a stable sort by score;
    - ``deform_psroi_pool`` -> elementwise sample points and ``Gather`` (DESIGN 4.2);
    - ``deform_max_pool2d`` -> ``Pad``, ``GridSample``, ``ReduceMax``/``ArgMax`` (DESIGN 4.4).

    Each one is tested against our op in onnxruntime (tests/export/test_onnx_ops.py).
    """
    import dcn_det.ops  # noqa: F401  (registers torch.ops.dcn_det)
    from dcn_det.export import onnx_ops

    ops = torch.ops.dcn_det
    return {ops.deform_conv2d.default: onnx_ops.deform_conv2d,
            ops.roi_align.default: onnx_ops.roi_align,
            ops.nms.default: onnx_ops.nms,
            ops._batched_nms.default: onnx_ops.batched_nms,
            ops.deform_psroi_pool.default: onnx_ops.deform_psroi_pool,
            ops.deform_max_pool2d.default: onnx_ops.deform_max_pool2d}


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise RuntimeError("ONNX export needs the optional packages 'onnx' and 'onnxscript' "
                           f"(pip install onnx onnxscript): {e}") from e


def _check_opset(opset: int) -> None:
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} (DeformConv first appears in opset "
                         f"{MIN_OPSET}), got {opset}")


def program_to_onnx(program: "torch.export.ExportedProgram", output: str,
                    opset: int = MIN_OPSET, optimize: bool = True) -> str:
    """Translates a detector program of :func:`export_program` to ONNX and writes it.

    The file is written atomically (:mod:`dcn_det.io.atomic`: a temporary file beside
    ``output``, then ``os.replace``), so a failed export never leaves a partial model.

    Args:
        program: the ``ExportedProgram`` (dynamic H and W stay dynamic).
        output: the ``.onnx`` file to write (folders are created).
        opset: the ONNX opset, >= 19.
        optimize: run onnxscript's graph optimizer (constant folding, fusions); False gives
            the same computation in more nodes, and halves the export time.

    Returns:
        ``output``.

    Raises:
        RuntimeError: ``onnx`` or ``onnxscript`` is not installed (both are optional).
        ValueError: ``opset < 19``.
        WriteError: the file cannot be written.
    """
    _check_opset(opset)
    _require_onnx()
    onnx_program = torch.onnx.export(program, (), None, dynamo=True, opset_version=opset,
                                     input_names=["image"],
                                     output_names=["boxes", "scores", "labels"],
                                     custom_translation_table=onnx_translation_table(),
                                     optimize=optimize)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    write_bytes(output, onnx_program.model_proto.SerializeToString(), what="ONNX model")
    return output


def export_onnx(model: nn.Module, example_image: torch.Tensor, output: str,
                opset: int = MIN_OPSET) -> str:
    """Exports the detector to ONNX: :func:`export_program` (dynamic H and W), then
    :func:`program_to_onnx`.

    Args:
        model: the detector, in eval mode.
        example_image: uint8 ``(3, H, W)`` RGB tensor used for tracing (a resized image).
        output: the ``.onnx`` file (written atomically).
        opset: the ONNX opset, >= 19.

    Returns:
        ``output``.

    Raises:
        RuntimeError: ``onnx`` or ``onnxscript`` is not installed (both are optional).
        ValueError: ``opset < 19``, a model in training mode or a malformed example image.
    """
    _check_opset(opset)
    _check_example(model, example_image)
    _require_onnx()
    return program_to_onnx(export_program(model, example_image), output, opset)
