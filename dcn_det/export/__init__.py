"""Deployment graphs of a detector: ``torch.export`` programs and ONNX models (inference
files are :mod:`dcn_det.io.model_file`).

- :mod:`dcn_det.export.program`: :func:`export_program`, :func:`load_program`, the one-image
  wrapper and its input checks;
- :mod:`dcn_det.export.onnx_export`: :func:`export_onnx`, :func:`program_to_onnx` and the
  translation table;
- :mod:`dcn_det.export.onnx_ops`: each ``dcn_det`` operator in standard ONNX operators.

What the graphs take and return: README "Exported models" and DESIGN section 13.
"""
from dcn_det.export.onnx_export import (  # noqa: F401
    export_onnx, onnx_translation_table, program_to_onnx)
from dcn_det.export.program import (  # noqa: F401
    MAX_SIDE, MIN_SIDE, SingleImageDetector, export_program, load_program, min_side)

# The name the tests of other areas import.
_onnx_translation_table = onnx_translation_table
