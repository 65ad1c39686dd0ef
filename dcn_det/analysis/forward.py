"""One detector forward pass that also keeps what the offset analyses need.

``detect_with_offsets`` runs a ``TwoStageDetector`` on one resized image and returns its
detections in input-image pixels together with every deformable conv's offsets
(:class:`dcn_det.analysis.capture.DeformLayerRecord`) and the feature the box head saw, so the
sampling points and the pooling bins of the detections come from the very same pass.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from dcn_det.analysis.capture import DeformLayerRecord, OffsetCapture, find_deformable_convs
from dcn_det.analysis.pool_bins import deformable_pool_of


@dataclass
class DetectionOffsets:
    """Detections of one image and the offsets behind them.

    Attributes:
        image_hw: ``(h, w)`` of the resized (unpadded) input image.
        padded_hw: ``(H, W)`` of the padded batch the backbone saw.
        detections: ``{"boxes": (D, 4) XYXY input-image px, "scores": (D,), "labels": (D,)}``
            on the CPU, by decreasing score.
        records: the deformable convs in forward order (empty without any).
        head_feature: ``(1, C, H', W')`` the feature the box head read (on the model's
            device).
    """

    image_hw: Tuple[int, int]
    padded_hw: Tuple[int, int]
    detections: Dict[str, torch.Tensor]
    records: List[DeformLayerRecord]
    head_feature: Optional[torch.Tensor]


def has_deformable_conv(model: nn.Module) -> bool:
    """True when ``model`` contains a DeformConv2d or ModulatedDeformConv2d."""
    return bool(find_deformable_convs(model))


def has_deformable_pooling(model: nn.Module) -> bool:
    """True when the detector's box head pools with learned offsets."""
    head = getattr(getattr(model, "roi_heads", None), "box_head", None)
    return head is not None and deformable_pool_of(head) is not None


@torch.no_grad()
def detect_with_offsets(model: nn.Module, image: torch.Tensor) -> DetectionOffsets:
    """Runs the detector (eval mode) on one image, recording offsets and the head feature.

    Args:
        model: a ``TwoStageDetector`` in eval mode.
        image: uint8 ``(3, h, w)`` RGB, already resized as for inference
            (``Predictor.preprocess``).

    Returns:
        A :class:`DetectionOffsets`; detections are NOT rescaled to the original image.
    """
    if model.training:
        raise ValueError("detect_with_offsets needs the model in eval mode (model.eval())")
    captured: Dict[str, torch.Tensor] = {}

    def on_heads(module, args):
        captured["feature"] = args[0]

    handle = model.roi_heads.register_forward_pre_hook(on_heads)
    capture = OffsetCapture(model) if has_deformable_conv(model) else None
    try:
        if capture is not None:
            with capture:
                det = model([image.to(model.device)])[0]
            records = capture.ordered_records()
        else:
            det = model([image.to(model.device)])[0]
            records = []
    finally:
        handle.remove()
    order = torch.argsort(det["scores"].float().cpu(), descending=True, stable=True)
    det = {k: v.cpu()[order] for k, v in det.items()}
    feature = captured.get("feature")
    padded = (capture.image_hw if capture is not None else
              (int(-(-image.shape[1] // model.size_divisibility) * model.size_divisibility),
               int(-(-image.shape[2] // model.size_divisibility) * model.size_divisibility)))
    return DetectionOffsets(image_hw=(int(image.shape[1]), int(image.shape[2])),
                            padded_hw=padded, detections=det, records=records,
                            head_feature=feature)
