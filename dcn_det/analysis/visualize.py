"""Per-image offset pictures for ``tools/visualize_offsets.py``.

For one image file, :func:`visualize_image` writes into the output folder:

* ``NAME_points.png`` (models with deformable conv): the detections, and for each unit the
  sampling points composed through the chain of deformable layers (default: those of the
  last deformable stage), one colour per layer, the unit in green; v2 points sized and faded
  by their mask weight (paper Figure 5).
* ``NAME_bins.png`` (models with deformable (PS-)RoI pooling, when there are detections):
  the detections with their pooling bins moved by the learned offsets in the class colour,
  the regular bins faint (paper Figures 6-7).

Units are the centres of the top detections (``points=None``) or given points in
ORIGINAL-image pixels; everything is drawn in original-image pixels, on the original image
enlarged (``min_side``) when it is small, so that 729 points and 7x7 bins stay legible.
"""
import os
from typing import List, Optional, Sequence, Tuple, Union

import cv2
import torch

from dcn_det.analysis.draw import draw_pool_bins, draw_sampling_points
from dcn_det.analysis.forward import detect_with_offsets, has_deformable_pooling
from dcn_det.analysis.pool_bins import deformable_pool_bins
from dcn_det.analysis.sampling import compose_sampling_points, select_chain
from dcn_det.visualization import draw_detections, save_png

def parse_points(values: Sequence[str]) -> Optional[List[Tuple[float, float]]]:
    """``--points`` values -> ``[(x, y)]`` in original-image pixels, or None for ``auto``.

    Raises:
        ValueError: a value that is neither ``auto`` nor ``X,Y`` (names ``--points``).
    """
    values = list(values)
    if not values or values == ["auto"]:
        return None
    points = []
    for v in values:
        try:
            x, y = (float(t) for t in v.split(","))
        except ValueError:
            raise ValueError(f"--points takes 'auto' or X,Y pairs in original-image pixels "
                             f"(e.g. --points 120,80 40.5,60), got {v!r}") from None
        points.append((x, y))
    return points


def output_stem(path: str, used: set) -> str:
    """``NAME`` for the output files of ``path``; ``NAME_ext`` when another input had NAME."""
    stem, ext = os.path.splitext(os.path.basename(path))
    name = stem if stem not in used else f"{stem}_{ext.lstrip('.')}"
    used.add(name)
    return name


def visualize_image(predictor, image: Union[str, os.PathLike], output_dir: str, name: str, *,
                    points: Optional[Sequence[Tuple[float, float]]] = None,
                    max_detections: int = 3, chain=None, group=0,
                    min_side: int = 512) -> Tuple[List[str], List[str]]:
    """Writes the offset pictures of one image (module docstring).

    Args:
        predictor: a :class:`dcn_det.predictor.Predictor` (model, resize, score threshold,
            class names).
        image: the image file (or an ``(H, W, 3) uint8`` RGB array).
        output_dir: where the PNGs go.
        name: file-name stem (``NAME_points.png``, ``NAME_bins.png``).
        points: units in original-image pixels, or None = centres of the top detections
            (the image centre when there are none).
        max_detections: detections drawn, used as units and given bins (highest scores).
        chain: the deformable layers to compose (see
            :func:`dcn_det.analysis.sampling.select_chain`).
        group: offset group to follow, or ``"mean"``.
        min_side: a smaller image is enlarged (bilinear) to this short side before drawing;
            0 = draw at the original size.

    Returns:
        ``(written PNG paths, notes)``; notes say what could not be drawn and why.

    Raises:
        FileNotFoundError / RuntimeError: the image cannot be read (from ``decode_image``).
    """
    if isinstance(max_detections, bool) or not isinstance(max_detections, int) \
            or max_detections < 1:
        raise ValueError(f"max_detections must be a positive int, got {max_detections!r}")
    model = predictor.model
    rgb, tensor = predictor.preprocess(image)
    res = detect_with_offsets(model, tensor)
    (h, w), (oh, ow) = res.image_hw, rgb.shape[:2]
    zoom = max(1.0, min_side / min(oh, ow)) if min_side else 1.0
    if zoom > 1.0:
        rgb = cv2.resize(rgb, (int(round(ow * zoom)), int(round(oh * zoom))),
                         interpolation=cv2.INTER_LINEAR)
    # input-image pixels -> drawing pixels (original pixels times zoom)
    sx, sy = rgb.shape[1] / w, rgb.shape[0] / h
    det = res.detections
    keep = torch.nonzero(det["scores"] >= predictor.score_thresh).flatten()[:max_detections]
    boxes, scores, labels = det["boxes"][keep], det["scores"][keep], det["labels"][keep]
    scale4 = torch.tensor([sx, sy, sx, sy])
    drawn = draw_detections(rgb, boxes * scale4, scores, labels, predictor.class_names)
    written, notes = [], []

    if res.records:
        if points is not None:
            units = (torch.tensor(points, dtype=torch.float32).reshape(-1, 2)
                     * torch.tensor([w / ow, h / oh]))
        elif len(boxes):
            units = (boxes[:, :2] + boxes[:, 2:]) / 2
        else:
            units = torch.tensor([[w / 2.0, h / 2.0]])
            notes.append(f"no detection scores >= {predictor.score_thresh}: sampling points "
                         "of the image centre")
        composed = compose_sampling_points(select_chain(res.records, chain), units, group=group)
        img = draw_sampling_points(drawn, composed.scaled(sx, sy))
        written.append(save_png(os.path.join(output_dir, f"{name}_points.png"), img))
    else:
        notes.append("the model has no deformable convolution (model.backbone.deform_stages is "
                     "empty): no sampling-point picture")

    if not has_deformable_pooling(model):
        notes.append("the model's box head has no deformable RoI pooling: no bins picture")
    elif not len(boxes):
        notes.append(f"no detection scores >= {predictor.score_thresh}: no bins picture")
    else:
        bins = deformable_pool_bins(model.roi_heads.box_head, res.head_feature, boxes, labels)
        img = draw_pool_bins(drawn, bins.scaled(sx, sy), labels)
        written.append(save_png(os.path.join(output_dir, f"{name}_bins.png"), img))
    return written, notes
