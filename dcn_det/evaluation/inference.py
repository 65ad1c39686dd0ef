"""Runs a detector over a test loader and feeds an evaluator."""
import logging
import time
from typing import Any, Dict, Optional, Sequence

import torch

from dcn_det.progress import progress as progress_of

logger = logging.getLogger("dcn_det")


@torch.no_grad()
def inference_on_dataset(model: torch.nn.Module, loader, evaluator, device: torch.device,
                         progress: bool = True,
                         label_map: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Detections for every image of ``loader`` -> ``evaluator.evaluate()``.

    Args:
        model: the detector (DDP-unwrapped); switched to eval mode and back afterwards.
        loader: test batches ``(images, targets)``; ``targets[i]["orig_size"]`` is the image's
            size before resizing, so detections come back in original-image pixels.
        evaluator: a COCO/VOC evaluator (``reset``, ``process``, ``evaluate``).
        device: where the model runs.
        progress: report progress (rank 0 only): a bar on a terminal, a few lines in a log
            (:func:`dcn_det.progress.progress`).
        label_map: ``label_map[k]`` = the dataset label of model label ``k``
            (``class_map.model_to_dataset_labels``); None = the same labels.

    Returns:
        The evaluator's metrics (``{}`` on ranks other than 0).
    """
    lookup = None if label_map is None else torch.as_tensor(list(label_map), dtype=torch.int64)
    was_training = model.training
    model.eval()
    evaluator.reset()
    t0 = time.perf_counter()
    n = 0
    try:
        for images, targets in progress_of(loader, "inference", enabled=progress):
            images = [im.to(device) for im in images]
            outputs = model(images, orig_sizes=[t["orig_size"] for t in targets])
            outputs = [{k: v.cpu() for k, v in o.items()} for o in outputs]
            if lookup is not None:
                outputs = [{**o, "labels": lookup[o["labels"].long()]} for o in outputs]
            evaluator.process(targets, outputs)
            n += len(images)
    finally:
        model.train(was_training)
    dt = time.perf_counter() - t0
    logger.info("inference on %d images: %.3f s/image", n, dt / max(n, 1))
    return evaluator.evaluate()
