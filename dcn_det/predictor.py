"""``Predictor``: one call from an image file or array to detections in its own pixels.

    predictor = Predictor("model.pth", device="cpu", score_thresh=0.5)
    det = predictor("photo.jpg")      # or an (H, W, 3) uint8 RGB numpy array
    det["boxes"], det["scores"], det["labels"], det["class_names"]

Images are decoded (``dcn_det.data.transforms.decode_image``: EXIF orientation applied, RGB)
and resized by the test data pipeline's own transform (``ResizeShortestEdge``: short side
``data.min_size_test``, long side capped at ``data.max_size_test``); the model rescales its
boxes back to the original image, whose size it is given.
"""
import os
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from dcn_det.config import Config
from dcn_det.data.transforms import ResizeShortestEdge, decode_image, image_to_tensor
from dcn_det.io.checkpoint import CheckpointError
from dcn_det.io.model_file import build_inference_model, read_model_file

ImageInput = Union[str, os.PathLike, np.ndarray]


def _check_array(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8 or image.shape[0] < 1 or image.shape[1] < 1:
        got = (f"array {image.dtype} {image.shape}" if isinstance(image, np.ndarray)
               else type(image).__name__)
        raise ValueError(f"image must be a file path or an (H, W, 3) uint8 RGB array, got {got}")
    return image


class Predictor:
    """Runs a trained detector on single images.

    Args:
        path: an inference file (``tools/export.py``) or a training checkpoint.
        device: where the model runs ("cpu", "cuda", "cuda:1", ...).
        score_thresh: detections with a lower score are dropped (in [0, 1]).

    Attributes:
        model: the detector (eval mode); cfg: its Config; class_names: the K class names.
    """

    def __init__(self, path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                 score_thresh: float = 0.5):
        cfg, state, class_names = read_model_file(os.fspath(path))
        try:
            model = build_inference_model(cfg, state, device)
        except RuntimeError as e:  # load_state_dict lists the missing/unexpected/mis-shaped keys
            raise CheckpointError(f"{os.fspath(path)!r}: the weights do not fit the model its "
                                  f"config describes: {e}") from e
        self._setup(model, cfg, class_names, device, score_thresh)

    @classmethod
    def from_model(cls, model: nn.Module, cfg: Config, class_names: Sequence[str],
                   device: Union[str, torch.device] = "cpu",
                   score_thresh: float = 0.5) -> "Predictor":
        """A Predictor around a detector already in memory (e.g. right after training)."""
        self = cls.__new__(cls)
        self._setup(model.to(device).eval(), cfg, class_names, device, score_thresh)
        return self

    def _setup(self, model: nn.Module, cfg: Config, class_names: Sequence[str],
               device: Union[str, torch.device], score_thresh: float) -> None:
        if not 0.0 <= float(score_thresh) <= 1.0:
            raise ValueError(f"score_thresh must be in [0, 1], got {score_thresh}")
        if len(class_names) != cfg.model.num_classes:
            raise ValueError(f"class_names has {len(class_names)} names, the model has "
                             f"model.num_classes={cfg.model.num_classes}")
        self.model = model
        self.cfg = cfg
        self.class_names: List[str] = list(class_names)
        self.device = torch.device(device)
        self.score_thresh = float(score_thresh)
        self.resize = ResizeShortestEdge([cfg.data.min_size_test], cfg.data.max_size_test)

    def preprocess(self, image: ImageInput) -> Tuple[np.ndarray, torch.Tensor]:
        """Returns ``(original RGB array (H, W, 3), resized uint8 tensor (3, h, w))``."""
        rgb = decode_image(os.fspath(image)) if isinstance(image, (str, os.PathLike)) \
            else _check_array(image)
        no_boxes = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
        resized, _ = self.resize(rgb, no_boxes)
        return rgb, image_to_tensor(resized)

    @torch.inference_mode()
    def __call__(self, image: ImageInput) -> Dict[str, Any]:
        """Detects objects in one image.

        Args:
            image: a file path (any format OpenCV decodes; EXIF orientation applied) or an
                ``(H, W, 3) uint8`` RGB array.

        Returns:
            ``{"boxes": (D, 4) float32 XYXY px of the ORIGINAL image, "scores": (D,),
            "labels": (D,) int64, "class_names": [D names]}`` on the CPU, by decreasing score,
            keeping only scores >= ``score_thresh``.
        """
        rgb, tensor = self.preprocess(image)
        det = self.model([tensor.to(self.device)], orig_sizes=[tuple(rgb.shape[:2])])[0]
        scores = det["scores"].float().cpu()
        order = torch.argsort(scores, descending=True, stable=True)
        order = order[scores[order] >= self.score_thresh]
        labels = det["labels"].cpu()[order].long()
        return {"boxes": det["boxes"].float().cpu()[order], "scores": scores[order],
                "labels": labels, "class_names": [self.class_names[int(k)] for k in labels]}
