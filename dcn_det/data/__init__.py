"""Datasets (COCO, VOC, synthetic), transforms, samplers and data loaders.

Every dataset yields ``(image: uint8 tensor (3, H, W) RGB, target)`` with
``target = {"boxes": (M, 4) float32 XYXY px, "labels": (M,) int64 in 0..K-1, "image_id": int,
"orig_size": (h, w), "difficult": (M,) bool}`` and exposes ``class_names``, ``__len__``,
``image_hw(idx)``, ``get_annotations(idx)`` (untransformed ground truth for evaluators) and
``source`` (how errors name it). Datasets on disk (COCO, VOC) also expose ``image_path(idx)``,
``load_image(idx)`` (decoded, checked against the stated size) and ``dropped`` (the boxes
left out, counted per annotation file). A dataset that cannot be used raises ``DatasetError``.
"""
from .base import DatasetError
from .synthetic import SHAPE_NAMES, SyntheticDataset, write_coco, write_voc
from .transforms import (Compose, RandomHorizontalFlip, ResizeShortestEdge, build_transforms,
                         clip_and_filter_boxes, decode_image)
from .coco import COCODataset
from .voc import VOC_CLASSES, VOCDataset
from .samplers import AspectRatioGroupedBatchSampler, InferenceSampler, TrainingSampler
from .build import build_dataset, build_test_loader, build_train_loader
