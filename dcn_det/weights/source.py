"""What a format reader returns: tensors under our names, and what it left out and why."""
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

FORMATS = ("torchvision", "detectron2", "mmdet", "mxnet")
# Formats of whole detectors (``model.weights``): dcn_det's own checkpoints and inference files
# (and tools/convert_weights.py --detector output), mmdetection detectors, official MXNet models.
DETECTOR_FORMATS = ("dcn_det", "mmdet", "mxnet")


class WeightsError(ValueError):
    """A weights file is of the wrong format, malformed, or does not fit the model; the
    message names the file and the key or value at fault."""


class UnreadableWeightsError(WeightsError, RuntimeError):
    """A weights file cannot be read at all: truncated, corrupt, or refused by a safe loader."""


@dataclass
class SourceWeights:
    """A weights file mapped onto our backbone's names (``names.py``).

    Attributes:
        path: the file read.
        format: one of ``FORMATS``.
        tensors: our name -> tensor (float32 unless the file stored another float type), in
            our layouts: conv weights ``(C_out, C_in, kh, kw)``, norm vectors ``(C,)``,
            ``conv1.weight``'s input channels in RGB order (see ``flipped_bgr``).
        ignored: file keys skipped on purpose (classifier, optimizer momenta, step counters,
            bias blobs of bias-free convs), with no place in any backbone.
        not_mapped: file keys the format's name table does not cover (detector heads, necks):
            reported, never loaded.
        flipped_bgr: True when the file's stem conv took BGR input and its input channels were
            reversed so that it takes RGB like every dcn_det model.
        stride_in_1x1: the file's Bottleneck layout when the format fixes it (True: MSRA/Caffe,
            stride on the 1x1 conv; False: torchvision, on the 3x3), None when unknown.
        pixel_mean, pixel_std: the RGB normalisation (0-255 scale) the weights were trained
            with, when the format fixes it; ``model.pixel_mean/std`` should equal them.
        num_classes: a detector file's object classes K (background excluded), when it says;
            None for backbones.
        notes: sentences for the user about what was mapped how (detector files).
    """

    path: str
    format: str
    tensors: Dict[str, torch.Tensor] = field(default_factory=dict)
    ignored: List[str] = field(default_factory=list)
    not_mapped: List[str] = field(default_factory=list)
    flipped_bgr: bool = False
    stride_in_1x1: Optional[bool] = None
    pixel_mean: Optional[tuple] = None
    pixel_std: Optional[tuple] = None
    num_classes: Optional[int] = None
    notes: List[str] = field(default_factory=list)

    def add(self, name: str, value: torch.Tensor, file_key: str) -> None:
        """Stores ``value`` as our ``name``; two file keys mapping onto one name is an error."""
        if name in self.tensors:
            raise WeightsError(f"weights file {self.path!r} ({self.format}): key {file_key!r} "
                               f"maps onto {name!r}, which another key already filled")
        self.tensors[name] = value


def flip_stem_to_rgb(source: SourceWeights, stem_key: str = "conv1.weight") -> None:
    """Reverses the stem conv's input channels (BGR -> RGB) in place.

    A conv that read channel order (B, G, R) computes the same on (R, G, B) input once the
    weight's axis 1 is reversed; the per-channel pixel mean must follow (``pixel_mean`` is
    given in RGB order everywhere in dcn_det).
    """
    weight = source.tensors.get(stem_key)
    if weight is None:
        return
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise WeightsError(f"weights file {source.path!r}: {stem_key} has shape "
                           f"{tuple(weight.shape)}, not (C, 3, kh, kw); cannot reorder BGR->RGB")
    source.tensors[stem_key] = weight.flip(1).contiguous()
    source.flipped_bgr = True
