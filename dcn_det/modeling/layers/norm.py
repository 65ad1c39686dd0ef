"""Normalisation layers for the backbone: frozen BatchNorm and the ``get_norm`` factory."""
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

NORM_NAMES = ("frozen_bn", "bn", "gn", "syncbn")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (an affine map per channel).

    Detection fine-tunes with one or two images per GPU, far too few for reliable batch
    statistics, so the ImageNet statistics are kept as they are. Everything is a buffer (not a
    parameter): the optimizer never sees it, yet it is saved and loaded with the state dict.
    The buffer names equal ``nn.BatchNorm2d``'s, so a BatchNorm state dict loads directly;
    its ``num_batches_tracked`` entry is accepted and dropped.

    Computes ``y = (x - running_mean) / sqrt(running_var + eps) * weight + bias``, which is
    exactly ``nn.BatchNorm2d`` in eval mode.

    Args:
        num_features: number of channels C.
        eps: added to the variance, 1e-5 like ``nn.BatchNorm2d``.

    Shape:
        input (N, C, H, W) -> output (N, C, H, W).
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        if not isinstance(num_features, int) or num_features <= 0:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.size(1) != self.num_features:
            raise ValueError(
                f"FrozenBatchNorm2d({self.num_features}) needs input of shape "
                f"(N, {self.num_features}, H, W), got shape {tuple(x.shape)}")
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        # Folding into one scale and shift keeps it a single fused multiply-add per element.
        return x * scale.to(x.dtype).view(1, -1, 1, 1) + shift.to(x.dtype).view(1, -1, 1, 1)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        # BatchNorm checkpoints carry a step counter that means nothing for frozen statistics.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm) -> "FrozenBatchNorm2d":
        """Returns a FrozenBatchNorm2d holding a copy of ``bn``'s statistics and affine params."""
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm):
            raise ValueError(f"bn must be a BatchNorm module, got {type(bn).__name__}")
        frozen = cls(bn.num_features, eps=bn.eps)
        with torch.no_grad():
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            if bn.track_running_stats:
                frozen.running_mean.copy_(bn.running_mean)
                frozen.running_var.copy_(bn.running_var)
        return frozen

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _sync_is_possible() -> bool:
    """True when SyncBatchNorm can actually synchronise: a multi-process, non-gloo group.

    PyTorch's SyncBatchNorm only syncs GPU tensors (gloo/CPU raises in forward), and a single
    process has nothing to sync with.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return dist.get_world_size() > 1 and dist.get_backend() != "gloo"


def get_norm(name: str, channels: int, gn_groups: Optional[int] = 32) -> nn.Module:
    """Builds a 2-d normalisation layer by name.

    Args:
        name: ``"frozen_bn"`` (FrozenBatchNorm2d), ``"bn"`` (nn.BatchNorm2d), ``"gn"``
            (nn.GroupNorm with ``gn_groups`` groups) or ``"syncbn"``. ``"syncbn"`` builds
            ``nn.SyncBatchNorm`` only when ``torch.distributed`` is initialised with more than
            one process on a non-gloo backend (i.e. NCCL/GPU); otherwise it builds
            ``nn.BatchNorm2d``, the same computation for a single process and with an
            identical state dict, so a syncbn config still builds and runs on a CPU machine.
            Call this after initialising the process group.
        channels: number of channels C.
        gn_groups: groups for ``"gn"``; must divide ``channels``.

    Returns:
        A module mapping (N, C, H, W) -> (N, C, H, W).
    """
    if not isinstance(channels, int) or channels <= 0:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    if name == "frozen_bn":
        return FrozenBatchNorm2d(channels)
    if name == "bn":
        return nn.BatchNorm2d(channels)
    if name == "syncbn":
        return nn.SyncBatchNorm(channels) if _sync_is_possible() else nn.BatchNorm2d(channels)
    if name == "gn":
        if not isinstance(gn_groups, int) or gn_groups <= 0 or channels % gn_groups != 0:
            raise ValueError(
                f"gn_groups must be a positive int dividing the channel count; got "
                f"gn_groups={gn_groups!r} for a layer with {channels} channels")
        return nn.GroupNorm(gn_groups, channels)
    raise ValueError(f"norm must be one of {list(NORM_NAMES)}, got {name!r}")
