"""What an evaluation during training writes to TensorBoard: the metrics and drawn images.

Tags (the step is the number of iterations done when the model was evaluated):

- ``eval/<metric>``: COCO ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``, or VOC ``mAP``
  and ``mAP_07``.
- ``eval_per_class/<class name>``: the per-class AP (COCO AP@[.5:.95]; VOC area AP at 0.5).
- ``eval_per_class_07/<class name>``: VOC's 11-point per-class AP.
- ``eval_images/<image_id>``: the first ``test.vis_images`` test images, resized as the model
  sees them, with the detections scoring at least ``test.vis_score_thresh`` in their class
  colours and the ground-truth boxes in white (``GT <class>``).

NaN values (a metric without ground truth, e.g. APl without large objects) are not written:
TensorBoard draws them as gaps at best.
"""
import math
from typing import Any, Dict, List, Sequence, Tuple

import torch

from dcn_det.visualization import draw_detections, draw_ground_truth


def eval_scalars(metrics: Dict[str, Any]) -> Dict[str, float]:
    """The TensorBoard scalars of one evaluation result, by tag (see the module docstring).

    Args:
        metrics: an evaluator's result, ``{"bbox": ..., "bbox_per_class": ...}`` (COCO) or
            ``{"voc": ...}``; ``{}`` (ranks other than 0) gives ``{}``.
    """
    scalars: Dict[str, float] = {}
    for k, v in metrics.get("bbox", {}).items():
        scalars[f"eval/{k}"] = v
    for name, v in metrics.get("bbox_per_class", {}).items():
        scalars[f"eval_per_class/{name}"] = v
    voc = metrics.get("voc", {})
    for k in ("mAP", "mAP_07"):
        if k in voc:
            scalars[f"eval/{k}"] = voc[k]
    for name, per in voc.get("per_class", {}).items():
        scalars[f"eval_per_class/{name}"] = per["AP"]
        if "AP_07" in per:
            scalars[f"eval_per_class_07/{name}"] = per["AP_07"]
    return {tag: float(v) for tag, v in scalars.items()
            if isinstance(v, (int, float)) and not math.isnan(float(v))}


def log_eval_metrics(writer, metrics: Dict[str, Any], iteration: int) -> None:
    """Writes :func:`eval_scalars` at step ``iteration``; nothing when ``writer`` is None."""
    if writer is None:
        return
    for tag, value in eval_scalars(metrics).items():
        writer.add_scalar(tag, value, iteration)


class EvalImages:
    """The first test images, kept in memory, drawn with the model's detections at each
    evaluation.

    Args:
        dataset: the test dataset with its test transforms; ``dataset[i]`` is ``(uint8 image
            (3, H, W) RGB resized, target)`` with ``target["boxes"]`` XYXY px of the resized
            image, ``"labels"`` and ``"image_id"``.
        num_images: how many (the first ``num_images``, fewer when the dataset is smaller).
        model_class_names: the model's class names (its label ``k``), for the detections.
        score_thresh: detections scoring below it are not drawn.
    """

    def __init__(self, dataset, num_images: int, model_class_names: Sequence[str],
                 score_thresh: float):
        self.items: List[Tuple[torch.Tensor, Dict[str, Any]]] = [
            dataset[i] for i in range(min(int(num_images), len(dataset)))]
        self.gt_class_names = list(dataset.class_names)
        self.model_class_names = list(model_class_names)
        self.score_thresh = float(score_thresh)

    @torch.no_grad()
    def draw(self, model: torch.nn.Module, device: torch.device) -> List[Tuple[str, Any]]:
        """``[(tag, (H, W, 3) uint8 RGB drawing)]``, one forward per image (eval mode, restored
        afterwards); boxes stay in the resized image's pixels, the frame of the drawing."""
        was_training = model.training
        model.eval()
        drawn = []
        try:
            for image, target in self.items:
                det = model([image.to(device)])[0]
                rgb = image.permute(1, 2, 0).numpy()
                rgb = draw_ground_truth(rgb, target["boxes"], target["labels"],
                                        self.gt_class_names)
                rgb = draw_detections(rgb, det["boxes"].cpu(), det["scores"].float().cpu(),
                                      det["labels"].cpu(), self.model_class_names,
                                      score_thresh=self.score_thresh)
                drawn.append((f"eval_images/{target['image_id']}", rgb))
        finally:
            model.train(was_training)
        return drawn

    def log(self, writer, model: torch.nn.Module, device: torch.device, iteration: int) -> None:
        """Draws every image and adds it to TensorBoard at step ``iteration``."""
        if writer is None:
            return
        for tag, rgb in self.draw(model, device):
            writer.add_image(tag, rgb, iteration, dataformats="HWC")
