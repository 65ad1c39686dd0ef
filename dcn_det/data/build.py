"""Builders that map the ``data`` config section onto datasets, samplers and loaders.

Batches are ``(images: list[uint8 (3, H, W) RGB], targets: list[dict])``: images keep their
own sizes (the model's ``preprocess`` pads them), so collation is a plain transpose.

Both loaders check, before the first batch, that every image file of their dataset exists
(all missing ones named at once); the training loader also checks the dataset's number of
classes against the model's.

Workers are forked with OpenCV's thread pool left alone: calling ``cv2.setNumThreads`` in a
forked worker deadlocked here (it tears down condition variables the parent's pool threads
were waiting on), while using the inherited pool is safe.
"""
from typing import List, Optional, Tuple

import torch
from torch.utils.data import BatchSampler, DataLoader

from .base import DatasetError
from .coco import COCODataset
from .files import require_dataset_files
from .seeded import SeededBatches, SeededDataset
from .samplers import (AspectRatioGroupedBatchSampler, InferenceSampler, TrainingSampler,
                       aspect_ratio_group_ids)
from .synthetic import SyntheticDataset
from .transforms import build_transforms
from .voc import VOCDataset

DATASET_TYPES = ("coco", "voc", "synthetic")


def synthetic_kwargs(synthetic_cfg) -> dict:
    """``SyntheticDataset`` keyword arguments (all but ``transforms``) of a ``data.*.synthetic``
    config section; also used by ``tools/make_synthetic.py --config`` to write the same images."""
    s = synthetic_cfg
    return dict(num_images=s.num_images, seed=s.seed, image_size=tuple(s.image_size),
                num_classes=s.num_classes, min_objects=s.min_objects, max_objects=s.max_objects,
                split=s.split, min_object_size=s.min_object_size,
                max_object_fraction=s.max_object_fraction, distortion=s.distortion,
                clutter=s.clutter)


def build_dataset(ds_cfg, data_cfg, is_train: bool):
    """Builds one dataset with the training or test transforms.

    Args:
        ds_cfg: a ``DatasetConfig`` (``type``, ``root``, ``ann_file``, ``splits``, ``synthetic``).
        data_cfg: the ``DataConfig`` holding sizes, flip probability and ``filter_empty``.
        is_train: training = multi-scale resize + flip, empty images filtered and VOC
            ``difficult`` objects left out; test = one size, no flip, every image kept.

    Returns:
        a ``COCODataset``, ``VOCDataset`` or ``SyntheticDataset``.
    """
    if is_train:
        transforms = build_transforms(list(data_cfg.min_size_train), data_cfg.max_size_train,
                                      data_cfg.flip_prob)
    else:
        transforms = build_transforms([data_cfg.min_size_test], data_cfg.max_size_test, 0.0)
    filter_empty = bool(is_train and data_cfg.filter_empty)
    kind = ds_cfg.type
    if kind == "coco":
        if not ds_cfg.ann_file:
            raise DatasetError("data.*.ann_file must name the COCO instances JSON for type 'coco'")
        return COCODataset(ds_cfg.ann_file, ds_cfg.root, transforms, filter_empty=filter_empty)
    if kind == "voc":
        if not ds_cfg.root or not ds_cfg.splits:
            raise DatasetError("data.*.root (the VOCdevkit folder) and data.*.splits (e.g. "
                             f"['2007/trainval']) are required for type 'voc'; got root="
                             f"{ds_cfg.root!r}, splits={list(ds_cfg.splits)!r}")
        return VOCDataset(ds_cfg.root, list(ds_cfg.splits), transforms,
                          keep_difficult=not is_train, filter_empty=filter_empty)
    if kind == "synthetic":
        if ds_cfg.root:
            raise DatasetError(f"data.*.root must be '' for type 'synthetic' (generated in memory), "
                             f"got {ds_cfg.root!r}; read written synthetic data with type 'coco' "
                             "or 'voc'")
        return SyntheticDataset(**synthetic_kwargs(ds_cfg.synthetic), transforms=transforms)
    raise DatasetError(f"data.*.type must be one of {DATASET_TYPES}, got {kind!r}")


def check_num_classes(dataset, num_classes: int) -> None:
    """Raises when ``dataset`` has another number of classes than the model (``num_classes``).

    Labels ``>= num_classes`` would be read as background or index past the classifier;
    fewer classes would train outputs no data ever reaches.
    """
    names = list(dataset.class_names)
    if len(names) != num_classes:
        raise DatasetError(f"the training set {dataset.source} has {len(names)} classes "
                           f"{names} but model.num_classes is {num_classes}; set "
                           f"model.num_classes={len(names)} or use a dataset with "
                           f"{num_classes} classes")


def collate_lists(batch) -> Tuple[List[torch.Tensor], List[dict]]:
    """``[(image, target), ...] -> ([image, ...], [target, ...])``."""
    return [b[0] for b in batch], [b[1] for b in batch]


class InfiniteLoader:
    """An endless iterator of training batches that keeps its ``dataset`` and ``loader``."""

    def __init__(self, loader: DataLoader):
        self.loader = loader
        # the user-facing dataset, not the SeededDataset wrapper around it
        self.dataset = getattr(loader.dataset, "dataset", loader.dataset)
        self._it = iter(loader)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    def close(self) -> None:
        """Stops the worker processes now (otherwise they stop when this object is freed)."""
        shutdown = getattr(self._it, "_shutdown_workers", None)  # absent with num_workers=0
        if shutdown is not None:
            shutdown()


def build_train_loader(data_cfg, rank: int = 0, world_size: int = 1, seed: int = 0,
                       start_iter: int = 0, num_classes: Optional[int] = None) -> InfiniteLoader:
    """Infinite training batches for this process's shard.

    Args:
        data_cfg: the ``DataConfig``; ``images_per_batch`` is per process.
        rank, world_size: the distributed shard.
        seed: fixes the index stream (shared by all ranks) and each item's augmentation
            (see :mod:`dcn_det.data.seeded`).
        start_iter: batches to skip, so a resumed run continues the same batch sequence.
        num_classes: the model's ``model.num_classes``; the dataset must have as many classes
            (None = not checked).

    Returns:
        an ``InfiniteLoader``: ``next()`` gives ``(list[image], list[target])``.

    Raises:
        DatasetError: an empty dataset or another number of classes than ``num_classes``.
        FileNotFoundError: image files are missing (all of them named).
    """
    dataset = build_dataset(data_cfg.train, data_cfg, is_train=True)
    if len(dataset) == 0:
        raise DatasetError(f"the training dataset {dataset.source} is empty (after filtering "
                           "images without boxes)")
    if num_classes is not None:
        check_num_classes(dataset, num_classes)
    require_dataset_files(dataset)
    sampler = TrainingSampler(len(dataset), shuffle=True, seed=seed, rank=rank, world_size=world_size)
    if data_cfg.aspect_ratio_grouping:
        batch_sampler = AspectRatioGroupedBatchSampler(sampler, aspect_ratio_group_ids(dataset),
                                                       data_cfg.images_per_batch)
    else:
        batch_sampler = BatchSampler(sampler, data_cfg.images_per_batch, drop_last=True)
    # The DataLoader draws its workers' base seed from `generator`; a private one keeps it
    # from consuming the global RNG, which a resumed run restores from its checkpoint.
    generator = torch.Generator()
    generator.manual_seed(seed * 1000 + rank)
    loader = DataLoader(SeededDataset(dataset),
                        batch_sampler=SeededBatches(batch_sampler, seed, rank, start_iter),
                        num_workers=data_cfg.num_workers, collate_fn=collate_lists,
                        generator=generator)
    return InfiniteLoader(loader)


def build_test_loader(data_cfg, rank: int = 0, world_size: int = 1) -> DataLoader:
    """Test batches covering every image of ``data_cfg.test`` exactly once across ranks.

    One resize (``min_size_test``, ``max_size_test``), no flip, no filtering. ``.dataset`` of
    the returned loader is the dataset (``get_annotations`` for evaluators). Missing image
    files raise ``FileNotFoundError`` (all of them named) before the first batch.
    """
    dataset = build_dataset(data_cfg.test, data_cfg, is_train=False)
    require_dataset_files(dataset)
    return DataLoader(dataset, sampler=InferenceSampler(len(dataset), rank, world_size),
                      batch_size=data_cfg.test_images_per_batch, num_workers=data_cfg.num_workers,
                      collate_fn=collate_lists)
