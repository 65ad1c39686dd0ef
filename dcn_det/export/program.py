"""``torch.export`` programs of a detector: export, save and load.

The exported program (and the ONNX model of :mod:`dcn_det.export.onnx_export`) takes ONE
image: a uint8 ``(3, H, W)`` RGB tensor that is already resized (the Predictor's resize; see
:mod:`dcn_det.predictor`), and returns ``(boxes (D, 4) float32 XYXY px of that input image,
scores (D,), labels (D,) int64)``. Normalisation (pixel mean/std) and padding to the size
divisibility happen inside. Mapping boxes back to the original image is the caller's job
(multiply by the size ratios). H and W are dynamic (``torch.export.Dim``, :func:`min_side`
(32; 65 for FPN) to 4096) unless ``dynamic_size=False``; D is data-dependent (score threshold
and NMS), which ``torch.export`` represents with unbacked sizes. So the model code on that
path must never branch in Python on a data-dependent size (use ``guard_or_false``) nor turn
the image size into a Python ``int`` (that fixes H and W); the ``dcn_det`` ops all have fake
kernels (``nms`` allocates a data-dependent output). Batches of several images are not
exported: the detector takes a Python list of differently sized images, which a program
cannot.

A saved program calls the ``dcn_det`` operators, so loading it needs them registered:
:func:`load_program` imports them first.
"""
import io
import logging
import os
from typing import Optional, Tuple

import torch
from torch import nn

from dcn_det.io.atomic import write_bytes
from dcn_det.io.checkpoint import CheckpointError

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


def min_side(model: nn.Module) -> int:
    """The smallest image side (px) a dynamic-size program of ``model`` accepts.

    ``MIN_SIDE`` (32), or one more than the largest feature stride of the model's neck (65 for
    FPN, whose P6 has stride 64): then every feature map keeps at least 2 cells per side,
    since ``torch.export`` specialises a size that can be 1 (the strided P6 subsampling guards
    on it) and the program would accept one image size only.
    """
    strides = getattr(getattr(model, "neck", None), "out_strides", None) or {}
    return max([MIN_SIDE] + [int(s) + 1 for s in strides.values()])


def _check_example(model: nn.Module, image: torch.Tensor) -> int:
    """Refuses a model in training mode or an example image export cannot take; returns the
    smallest side a dynamic-size program of ``model`` accepts (:func:`min_side`)."""
    if model.training:
        raise ValueError("export needs the model in eval mode (call model.eval()); the training "
                         "forward returns losses")
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3 \
            or image.dtype != torch.uint8:
        got = (f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor)
               else type(image).__name__)
        raise ValueError(f"example_image must be a uint8 (3, H, W) RGB tensor, got {got}")
    lo = min_side(model)
    if not (lo <= image.shape[1] <= MAX_SIDE and lo <= image.shape[2] <= MAX_SIDE):
        raise ValueError(f"example_image sides must be in [{lo}, {MAX_SIDE}], got "
                         f"{tuple(image.shape[1:])}")
    return lo


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
    lo = _check_example(model, example_image)
    dynamic_shapes = None
    if dynamic_size:
        h = torch.export.Dim("height", min=lo, max=MAX_SIDE)
        w = torch.export.Dim("width", min=lo, max=MAX_SIDE)
        dynamic_shapes = {"image": {1: h, 2: w}}
    with torch.no_grad():
        program = torch.export.export(SingleImageDetector(model), (example_image,),
                                      dynamic_shapes=dynamic_shapes)
    if output is not None:
        buf = io.BytesIO()
        torch.export.save(program, buf)
        write_bytes(output, buf.getbuffer(), what="exported program")
    return program


def load_program(path: str) -> "torch.export.ExportedProgram":
    """Loads a program saved by :func:`export_program` (``.pt2``), in any process.

    ``torch.export.load`` alone needs the ``dcn_det`` operators registered before it runs
    (``import dcn_det.ops``); this imports them first.

    Args:
        path: the ``.pt2`` file.

    Returns:
        The ``ExportedProgram``; ``program.module()(image)`` runs it.

    Raises:
        FileNotFoundError: no file at ``path`` (one line naming it).
        CheckpointError: the file is not a readable program (truncated, corrupt, another
            format), one line naming it and the reason.
    """
    import dcn_det.ops  # noqa: F401  (registers torch.ops.dcn_det, which the program calls)

    if not os.path.isfile(path):
        raise FileNotFoundError(f"torch.export program {path!r} does not exist")
    try:
        return torch.export.load(path)
    except Exception as e:  # torch raises many types (zipfile, RuntimeError, KeyError, ...)
        reason = " ".join(str(e).split()) or type(e).__name__
        if len(reason) > 200:
            reason = reason[:200] + "..."
        raise CheckpointError(f"{path!r} is not a readable torch.export program (.pt2 from "
                              f"tools/export.py --format export): {type(e).__name__}: "
                              f"{reason}") from e
