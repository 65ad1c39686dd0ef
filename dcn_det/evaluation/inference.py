"""Runs a detector over a test loader and feeds an evaluator."""
import logging
import time
from typing import Any, Dict

import torch
from tqdm import tqdm

logger = logging.getLogger("dcn_det")


@torch.no_grad()
def inference_on_dataset(model: torch.nn.Module, loader, evaluator, device: torch.device,
                         progress: bool = True) -> Dict[str, Any]:
    """Detections for every image of ``loader`` -> ``evaluator.evaluate()``.

    Args:
        model: the detector (DDP-unwrapped); switched to eval mode and back afterwards.
        loader: test batches ``(images, targets)``; ``targets[i]["orig_size"]`` is the image's
            size before resizing, so detections come back in original-image pixels.
        evaluator: a COCO/VOC evaluator (``reset``, ``process``, ``evaluate``).
        device: where the model runs.
        progress: show a tqdm bar (rank 0 only).

    Returns:
        The evaluator's metrics (``{}`` on ranks other than 0).
    """
    was_training = model.training
    model.eval()
    evaluator.reset()
    t0 = time.perf_counter()
    n = 0
    try:
        for images, targets in tqdm(loader, desc="inference", disable=not progress,
                                    dynamic_ncols=True):
            images = [im.to(device) for im in images]
            outputs = model(images, orig_sizes=[t["orig_size"] for t in targets])
            outputs = [{k: v.cpu() for k, v in o.items()} for o in outputs]
            evaluator.process(targets, outputs)
            n += len(images)
    finally:
        model.train(was_training)
    dt = time.perf_counter() - t0
    logger.info("inference on %d images: %.3f s/image", n, dt / max(n, 1))
    return evaluator.evaluate()
