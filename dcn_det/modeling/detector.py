"""The two-stage detector: preprocess -> backbone -> RPN -> RoI heads -> postprocess."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from dcn_det.structures import ImageList


class TwoStageDetector(nn.Module):
    """R-FCN or Faster R-CNN (C4 or FPN), depending on the neck and the box head.

    Args:
        backbone: module ``x (N, 3, H, W) -> {name: (N, C, H/s, W/s)}``.
        rpn: :class:`dcn_det.modeling.rpn.RPN`.
        roi_heads: :class:`dcn_det.modeling.heads.roi_heads.RoIHeads`.
        pixel_mean, pixel_std: per-channel RGB normalisation on the 0-255 scale.
        size_divisibility: the padded batch's H and W are multiples of it.
        rpn_in_feature, head_in_feature: outputs (of the neck, else of the backbone) fed to
            the RPN and the head: one name each, or a list of names (FPN: the RPN reads
            P2-P6, the head P2-P5), which they then get as a list of tensors.
        neck: optional module ``{name: feature} -> {name: feature}`` between the backbone
            and the heads (the FPN); None = the backbone's features go straight on.
    """

    def __init__(self, *, backbone: nn.Module, rpn: nn.Module, roi_heads: nn.Module,
                 pixel_mean: Sequence[float], pixel_std: Sequence[float],
                 size_divisibility: int = 32, rpn_in_feature: Union[str, Sequence[str]] = "res4",
                 head_in_feature: Union[str, Sequence[str]] = "res5",
                 neck: Optional[nn.Module] = None):
        super().__init__()
        if len(pixel_mean) != 3 or len(pixel_std) != 3 or any(s <= 0 for s in pixel_std):
            raise ValueError(
                "pixel_mean and pixel_std must be 3 RGB values with std > 0, got "
                f"pixel_mean={list(pixel_mean)}, pixel_std={list(pixel_std)}")
        self.backbone = backbone
        self.neck = neck
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.size_divisibility = size_divisibility
        self.rpn_in_feature = rpn_in_feature if isinstance(rpn_in_feature, str) \
            else list(rpn_in_feature)
        self.head_in_feature = head_in_feature if isinstance(head_in_feature, str) \
            else list(head_in_feature)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1),
                             persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, images: List[torch.Tensor]) -> ImageList:
        """Normalises uint8 ``(3, H_i, W_i)`` RGB images and pads them into one batch.

        Padding comes after normalisation, so padded pixels are 0 = the mean colour.
        """
        if not isinstance(images, (list, tuple)) or len(images) == 0:
            raise ValueError(
                f"images must be a non-empty list of uint8 (3, H, W) tensors, got {type(images).__name__}"
                + (" of length 0" if isinstance(images, (list, tuple)) else ""))
        out = []
        for i, img in enumerate(images):
            if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] != 3 \
                    or img.shape[1] < 1 or img.shape[2] < 1:
                shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
                raise ValueError(f"images[{i}] must be a uint8 RGB tensor (3, H, W), got {shape}")
            if img.dtype != torch.uint8:
                raise ValueError(f"images[{i}] must have dtype uint8 (0-255 RGB), got {img.dtype}")
            x = img.to(self.device, non_blocking=True).float()
            out.append((x - self.pixel_mean) / self.pixel_std)
        return ImageList.from_tensors(out, self.size_divisibility)

    def _check_targets(self, targets, n: int) -> List[Dict[str, torch.Tensor]]:
        """Validates training targets and moves them to the model's device."""
        if targets is None or len(targets) != n:
            got = "None" if targets is None else f"{len(targets)} targets"
            raise ValueError(f"training needs one target per image: {n} images, got {got}")
        k = self.roi_heads.num_classes
        out = []
        for i, t in enumerate(targets):
            boxes, labels = t.get("boxes"), t.get("labels")
            if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
                shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else boxes
                raise ValueError(f"targets[{i}]['boxes'] must be a (M, 4) XYXY tensor, got {shape}")
            if not isinstance(labels, torch.Tensor) or labels.shape != (boxes.shape[0],):
                shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else labels
                raise ValueError(
                    f"targets[{i}]['labels'] must be a ({boxes.shape[0]},) int64 tensor, got {shape}")
            if labels.numel() and (labels.min() < 0 or labels.max() >= k):
                raise ValueError(
                    f"targets[{i}]['labels'] must be in 0..{k - 1} (num_classes={k}), got values "
                    f"in [{int(labels.min())}, {int(labels.max())}]")
            if not torch.isfinite(boxes).all():
                raise ValueError(f"targets[{i}]['boxes'] contains NaN or inf")
            out.append({"boxes": boxes.to(self.device, torch.float32),
                        "labels": labels.to(self.device, torch.int64)})
        return out

    def forward(self, images: List[torch.Tensor],
                targets: Optional[List[Dict[str, torch.Tensor]]] = None,
                orig_sizes: Optional[List[Tuple[int, int]]] = None):
        """Detects objects.

        Args:
            images: uint8 RGB ``(3, H_i, W_i)`` tensors (already resized by the dataset).
            targets: training only, per image ``{"boxes": (M, 4) XYXY px of the resized
                image, "labels": (M,) int64 in 0..K-1}``.
            orig_sizes: eval only, per image ``(h, w)`` of the original image; detections
                are rescaled from the input image to it. Defaults to each target's
                ``"orig_size"`` when targets are given, else no rescaling.

        Returns:
            Training: ``{"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}``. Eval: per
            image ``{"boxes": (D, 4) XYXY px of the original image, "scores": (D,),
            "labels": (D,) int64}``.
        """
        batch = self.preprocess(images)
        gts = self._check_targets(targets, len(images)) if self.training else None
        features = self.backbone(batch.tensor)
        if self.neck is not None:
            features = self.neck(features)
        proposals, rpn_losses = self.rpn(batch, self._select(features, self.rpn_in_feature),
                                         gts)
        detections, head_losses = self.roi_heads(
            self._select(features, self.head_in_feature), proposals, batch.image_sizes, gts)
        if self.training:
            return {**rpn_losses, **head_losses}
        if orig_sizes is None and targets is not None:
            orig_sizes = [t["orig_size"] if "orig_size" in t else s
                          for t, s in zip(targets, batch.image_sizes)]
        return self.postprocess(detections, batch.image_sizes, orig_sizes)

    @staticmethod
    def _select(features: Dict[str, torch.Tensor], names: Union[str, List[str]]
                ) -> Union[torch.Tensor, List[torch.Tensor]]:
        """``features[names]`` for one name, the list of them for a list of names."""
        for name in [names] if isinstance(names, str) else names:
            if name not in features:
                raise RuntimeError(
                    f"the backbone (and neck) returned features {sorted(features)}, the "
                    f"detector needs {name!r}")
        if isinstance(names, str):
            return features[names]
        return [features[n] for n in names]

    @staticmethod
    def postprocess(detections: List[Dict[str, torch.Tensor]], image_sizes: List[Tuple[int, int]],
                    orig_sizes: Optional[List[Tuple[int, int]]]) -> List[Dict[str, torch.Tensor]]:
        """Rescales each image's boxes from its input size to its original ``(h, w)``."""
        if orig_sizes is None:
            return detections
        if len(orig_sizes) != len(detections):
            raise ValueError(
                f"orig_sizes must give one (h, w) per image: {len(detections)} images, "
                f"got {len(orig_sizes)}")
        out = []
        for det, (h, w), orig in zip(detections, image_sizes, orig_sizes):
            oh, ow = (int(v) for v in orig)
            scale = det["boxes"].new_tensor([ow / w, oh / h, ow / w, oh / h])
            out.append({**det, "boxes": det["boxes"] * scale})
        return out
