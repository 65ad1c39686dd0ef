"""Detection metrics: COCO box AP (pycocotools) and PASCAL VOC mAP at IoU 0.5.

Both evaluators share one protocol: ``reset()``, ``process(targets, outputs)`` per batch (image
ids from the targets, detections from the model's eval output), ``evaluate()`` -> metrics in
percent on rank 0 (``{}`` on other ranks) after gathering every rank's detections.
"""
from .coco_evaluator import COCOEvaluator
from .build import build_evaluator, coco_from_dataset
from .inference import inference_on_dataset
from .voc_evaluator import VOCEvaluator

__all__ = ["COCOEvaluator", "VOCEvaluator", "build_evaluator", "coco_from_dataset",
           "inference_on_dataset"]
