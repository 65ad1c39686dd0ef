"""Pretrained weights from the files users have: torchvision, detectron2 ``.pkl``,
mmdetection checkpoints and the official MXNet Deformable ConvNets ``.params`` (DESIGN 5.1).

``load_pretrained(model, path)`` detects the format, maps the names onto the backbone's,
checks shapes and the filled fraction, and returns a ``LoadReport``; ``convert`` does the same
without a model for ``tools/convert_weights.py``. ``load_detector_weights(model, path)`` does
it for a whole detector (``model.weights``: dcn_det, mmdetection C4 and FPN, official MXNet
detectors), re-initialising the class-specific layers when the class count differs.
"""
from dcn_det.weights.detector import (CLASS_LAYERS, detect_detector_format,
                                      load_detector_source, load_detector_weights,
                                      read_detector_weights)
from dcn_det.weights.load import convert, detect_format, load_pretrained, load_source, read_weights
from dcn_det.weights.report import DEFAULT_MIN_FILL, FillError, LoadReport, check_pixel_stats
from dcn_det.weights.restricted_pickle import RefusedGlobalError
from dcn_det.weights.source import (DETECTOR_FORMATS, FORMATS, SourceWeights,
                                    UnreadableWeightsError, WeightsError)

__all__ = ["FORMATS", "DEFAULT_MIN_FILL", "LoadReport", "SourceWeights", "WeightsError",
           "UnreadableWeightsError", "FillError", "RefusedGlobalError", "load_pretrained",
           "load_source", "read_weights", "detect_format", "convert", "check_pixel_stats",
           "DETECTOR_FORMATS", "CLASS_LAYERS", "detect_detector_format", "load_detector_source",
           "load_detector_weights", "read_detector_weights"]
