"""The RPN's convolutional head: a shared 3x3 conv, then objectness and box-delta convs."""
from typing import Tuple

import torch
from torch import nn


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then 1x1 convs for objectness and box deltas of ``A`` anchors per cell.

    ``objectness="sigmoid"`` predicts one logit per anchor. ``"softmax"`` predicts the
    official two-way (background, foreground) scores, ``2A`` channels with the ``A``
    background maps first; the foreground logit used everywhere is ``fg - bg``, because a
    two-way softmax equals ``sigmoid(fg - bg)``, so its cross-entropy and its ranking are the
    same as those of a binary logistic on that difference.

    Args:
        in_channels: channels of the input feature.
        conv_channels: channels of the shared 3x3 conv (512 officially).
        num_anchors: anchors per cell ``A``.
        objectness: ``"sigmoid"`` or ``"softmax"``.
    """

    def __init__(self, in_channels: int, conv_channels: int, num_anchors: int,
                 objectness: str = "softmax"):
        super().__init__()
        if objectness not in ("sigmoid", "softmax"):
            raise ValueError(f"RPNHead objectness must be 'sigmoid' or 'softmax', got {objectness!r}")
        self.objectness = objectness
        self.num_anchors = num_anchors
        self.conv = nn.Conv2d(in_channels, conv_channels, 3, padding=1)
        cls_out = num_anchors if objectness == "sigmoid" else 2 * num_anchors
        self.cls_logits = nn.Conv2d(conv_channels, cls_out, 1)
        self.bbox_pred = nn.Conv2d(conv_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            # The official initialisation of every RPN conv.
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, feature: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Scores ``feature (N, C, H, W)``.

        Returns:
            ``objectness (N, H*W*A)`` foreground logits and ``deltas (N, H*W*A, 4)``, both in
            the anchor order of :class:`AnchorGenerator` (position-major, anchor innermost).
        """
        n, _, h, w = feature.shape
        a = self.num_anchors
        t = torch.relu(self.conv(feature))
        logits = self.cls_logits(t)
        if self.objectness == "softmax":
            logits = logits.view(n, 2, a, h, w)
            logits = logits[:, 1] - logits[:, 0]
        objectness = logits.permute(0, 2, 3, 1).reshape(n, -1)
        deltas = self.bbox_pred(t).view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
        return objectness, deltas
