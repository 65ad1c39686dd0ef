"""Generic layers shared by the models (normalisation)."""
from dcn_det.modeling.layers.norm import NORM_NAMES, FrozenBatchNorm2d, get_norm

__all__ = ["NORM_NAMES", "FrozenBatchNorm2d", "get_norm"]
