"""What both box heads share: argument checks, hidden-layer initialisation, the zero-initialised
offset layers of deformable pooling, and reading checkpoints written before those layers
moved from the pooling module into the heads."""
from typing import Dict

import torch
from torch import nn

from dcn_det.ops._validate import check_rois, check_tensor


def check_positive(name: str, value, integer: bool) -> None:
    """Raises ValueError unless ``value`` is a positive int (``integer``) or positive number."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        need = "a positive int" if integer else "a positive number"
        raise ValueError(f"{name} must be {need}, got {value!r}")


def check_head_inputs(feature: torch.Tensor, rois: torch.Tensor, in_channels: int,
                      head: str) -> None:
    """Raises ValueError unless ``feature`` is (N, in_channels, H, W) and ``rois`` (R, 5) match it."""
    check_tensor(feature, "feature", 4, f"(N, {in_channels}, H, W)")
    if feature.size(1) != in_channels:
        raise ValueError(
            f"{head} was built with in_channels={in_channels}, but feature has shape "
            f"{tuple(feature.shape)}; it needs (N, {in_channels}, H, W)")
    check_rois(rois)
    # Device only: under autocast the feature may be half while the rois stay float32 (half
    # cannot hold pixel coordinates), and the pooling ops handle that dtype mix themselves.
    if rois.device != feature.device:
        raise ValueError(
            f"rois is on {rois.device} but feature is on {feature.device}; "
            "they must be on the same device")


HIDDEN_INITS = ("official", "kaiming")


def check_hidden_init(hidden_init: str) -> None:
    """Raises ValueError unless ``hidden_init`` is one of ``HIDDEN_INITS``."""
    if hidden_init not in HIDDEN_INITS:
        raise ValueError(f"hidden_init must be one of {HIDDEN_INITS}, got {hidden_init!r}")


def init_hidden(layers, hidden_init: str) -> None:
    """Re-initialises a head's hidden (ReLU-followed) layers when ``hidden_init == "kaiming"``.

    Why: the official N(0, 0.01) keeps the activations of a 1024-wide layer on a pretrained
    backbone in range, but on a randomly initialised, narrow backbone two such layers in a row
    shrink the signal (and the gradient reaching the hidden layer) by ~100x, so the classifier
    barely learns. He-normal (fan-in, ReLU gain) keeps the activation scale through the layer.
    Biases stay zero; output layers (scores, boxes) keep the official small init.

    Args:
        layers: ``nn.Conv2d`` / ``nn.Linear`` modules followed by a ReLU.
        hidden_init: ``"official"`` (leave them as they are) or ``"kaiming"``.
    """
    check_hidden_init(hidden_init)
    if hidden_init == "kaiming":
        for layer in layers:
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(layer.bias)


def zero_offset_layer(layer: nn.Module, lr_mult: float) -> nn.Module:
    """Zero weights and bias (deformable pooling starts as plain pooling) and ``lr_mult`` for
    the optimizer builder; returns ``layer``."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    layer.lr_mult = float(lr_mult)
    return layer


def rename_legacy_keys(state_dict: Dict[str, torch.Tensor], prefix: str,
                       renames: Dict[str, str]) -> None:
    """Renames, in place, the keys ``prefix + old`` of ``state_dict`` to ``prefix + new``.

    Checkpoints written while the offset layers lived inside the pooling module (e.g.
    ``pool_cls.conv_offset.weight``) load into the heads' own layers (``cls_offset.weight``).
    """
    for old, new in renames.items():
        for suffix in ("weight", "bias"):
            key = f"{prefix}{old}.{suffix}"
            if key in state_dict:
                state_dict[f"{prefix}{new}.{suffix}"] = state_dict.pop(key)
