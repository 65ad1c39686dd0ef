"""``Predictor``: one call from images (files or arrays) to detections in their own pixels.

    predictor = Predictor("model.pth", device="cpu", score_thresh=0.5)
    det = predictor("photo.jpg")                      # one image -> one dict
    det["boxes"], det["scores"], det["labels"], det["class_names"]
    dets = predictor([frame_a, frame_b], format="BGR")  # a list -> a list, one forward

Inputs: a file path (decoded with ``dcn_det.data.transforms.decode_image``: EXIF orientation
applied, always RGB), an ``np.ndarray (H, W, 3) uint8`` (HWC) or a ``torch.Tensor (3, H, W)
uint8`` (CHW). Arrays and tensors are RGB unless ``format="BGR"`` says they are in OpenCV's
order (``cv2.imread``, ``cv2.VideoCapture`` frames); the default is RGB, the order the model
is trained in. Each image is resized by the test data pipeline's own transform
(``ResizeShortestEdge``: short side ``data.min_size_test``, long side capped at
``data.max_size_test``); the model rescales its boxes back to the original image, whose size
it is given.
"""
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from dcn_det.config import Config
from dcn_det.data.transforms import ResizeShortestEdge, decode_image, image_to_tensor
from dcn_det.io.checkpoint import CheckpointError
from dcn_det.io.model_file import build_inference_model, read_model_file

ImageInput = Union[str, os.PathLike, np.ndarray, torch.Tensor]
FORMATS = ("RGB", "BGR")


def check_format(format: Any) -> str:  # "format": the name detectron2 users know
    """Returns ``format`` when it is ``"RGB"`` or ``"BGR"``; raises ValueError otherwise."""
    if format not in FORMATS:
        raise ValueError(f"format must be 'RGB' or 'BGR' (the channel order of arrays and "
                         f"tensors), got {format!r}")
    return format


def _describe(image: Any) -> str:
    if isinstance(image, np.ndarray):
        return f"array {image.dtype} {image.shape}"
    if isinstance(image, torch.Tensor):
        return f"tensor {str(image.dtype).replace('torch.', '')} {tuple(image.shape)}"
    return type(image).__name__


def to_rgb_array(image: Any, format: str = "RGB", name: str = "image") -> np.ndarray:
    """An image input as an ``(H, W, 3) uint8`` RGB array (see the module docstring).

    Args:
        image: a path, an ``(H, W, 3) uint8`` array or a ``(3, H, W) uint8`` tensor.
        format: the channel order of an array or tensor (``"RGB"`` or ``"BGR"``); files are
            always decoded to RGB.
        name: how errors name the input (``images[2]``).

    Raises:
        ValueError: another type, dtype, shape or format value (names the input and what it
            got).
        FileNotFoundError, RuntimeError: a path that does not exist or is not an image.
    """
    check_format(format)
    if isinstance(image, (str, os.PathLike)):
        return decode_image(os.fspath(image))
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8 \
                or image.shape[1] < 1 or image.shape[2] < 1:
            raise ValueError(f"{name}: a tensor must be (3, H, W) uint8 (CHW), got "
                             f"{_describe(image)}")
        array = image.detach().cpu().permute(1, 2, 0).numpy()
    elif isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 \
                or image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"{name} must be a file path, an (H, W, 3) uint8 array (HWC) or a "
                             f"(3, H, W) uint8 tensor, got {_describe(image)}")
        array = image
    else:
        raise ValueError(f"{name} must be a file path, an (H, W, 3) uint8 array (HWC) or a "
                         f"(3, H, W) uint8 tensor, got {_describe(image)}")
    if format == "BGR":
        array = array[..., ::-1]
    return np.ascontiguousarray(array)


class Predictor:
    """Runs a trained detector on images, one at a time or a list in one forward.

    Args:
        path: an inference file (``tools/export.py``) or a training checkpoint.
        device: where the model runs ("cpu", "cuda", "cuda:1", ...).
        score_thresh: detections with a lower score are dropped (in [0, 1]).
        format: the channel order of array and tensor inputs, ``"RGB"`` (default) or
            ``"BGR"`` (OpenCV); a call's ``format=`` overrides it. Files are always decoded
            to RGB.

    Attributes:
        model: the detector (eval mode); cfg: its Config; class_names: the K class names;
        format: the default channel order.
    """

    def __init__(self, path: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                 score_thresh: float = 0.5, format: str = "RGB"):
        check_format(format)
        cfg, state, class_names = read_model_file(os.fspath(path))
        try:
            model = build_inference_model(cfg, state, device)
        except RuntimeError as e:  # load_state_dict lists the missing/unexpected/mis-shaped keys
            raise CheckpointError(f"{os.fspath(path)!r}: the weights do not fit the model its "
                                  f"config describes: {e}") from e
        self._setup(model, cfg, class_names, device, score_thresh, format)

    @classmethod
    def from_model(cls, model: nn.Module, cfg: Config, class_names: Sequence[str],
                   device: Union[str, torch.device] = "cpu", score_thresh: float = 0.5,
                   format: str = "RGB") -> "Predictor":
        """A Predictor around a detector already in memory (e.g. right after training)."""
        self = cls.__new__(cls)
        self._setup(model.to(device).eval(), cfg, class_names, device, score_thresh, format)
        return self

    def _setup(self, model: nn.Module, cfg: Config, class_names: Sequence[str],
               device: Union[str, torch.device], score_thresh: float, format: str) -> None:
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
        self.format = check_format(format)
        self.resize = ResizeShortestEdge([cfg.data.min_size_test], cfg.data.max_size_test)

    def preprocess(self, image: ImageInput, format: Optional[str] = None,
                   name: str = "image") -> Tuple[np.ndarray, torch.Tensor]:
        """Returns ``(original RGB array (H, W, 3), resized uint8 RGB tensor (3, h, w))``."""
        rgb = to_rgb_array(image, self.format if format is None else format, name)
        no_boxes = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
        resized, _ = self.resize(rgb, no_boxes)
        return rgb, image_to_tensor(resized)

    @torch.inference_mode()
    def __call__(self, images: Union[ImageInput, Sequence[ImageInput]],
                 format: Optional[str] = None) -> Union[Dict[str, Any], List[Dict[str, Any]]]:
        """Detects objects in one image or a list of images.

        Args:
            images: one image, or a list/tuple of them: a file path (any format OpenCV
                decodes; EXIF orientation applied), an ``(H, W, 3) uint8`` array or a
                ``(3, H, W) uint8`` tensor. A list runs as one batch (one forward; the model
                pads the images to a common size, so on images of different sizes a
                detection's score can differ from a one-image call in the last digits).
            format: the channel order of arrays and tensors, ``"RGB"`` or ``"BGR"``; None =
                the Predictor's ``format``.

        Returns:
            For one image ``{"boxes": (D, 4) float32 XYXY px of the ORIGINAL image,
            "scores": (D,), "labels": (D,) int64, "class_names": [D names]}`` on the CPU, by
            decreasing score, keeping only scores >= ``score_thresh``; for a list, a list of
            such dicts in the same order.

        Raises:
            ValueError: an input of another type, dtype or shape (named ``images[i]``), an
                empty list, or a ``format`` other than RGB/BGR.
        """
        single = not isinstance(images, (list, tuple))
        batch = [images] if single else list(images)
        if not batch:
            raise ValueError("images is an empty list: pass one image or a non-empty list")
        prepared = [self.preprocess(im, format, "image" if single else f"images[{i}]")
                    for i, im in enumerate(batch)]
        dets = self.model([t.to(self.device) for _, t in prepared],
                          orig_sizes=[tuple(rgb.shape[:2]) for rgb, _ in prepared])
        results = [self._postprocess(det) for det in dets]
        return results[0] if single else results

    def _postprocess(self, det: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        scores = det["scores"].float().cpu()
        order = torch.argsort(scores, descending=True, stable=True)
        order = order[scores[order] >= self.score_thresh]
        labels = det["labels"].cpu()[order].long()
        return {"boxes": det["boxes"].float().cpu()[order], "scores": scores[order],
                "labels": labels, "class_names": [self.class_names[int(k)] for k in labels]}
