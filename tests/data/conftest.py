"""Small data config sections for the data tests, built from the real config dataclasses."""
from dcn_det.config import DataConfig, DatasetConfig, SyntheticConfig


def synthetic_cfg(**kw):
    base = dict(num_images=8, seed=0, image_size=(96, 128), num_classes=4, min_objects=1,
                max_objects=4, split="train")
    base.update(kw)
    return SyntheticConfig(**base)


def dataset_cfg(**kw):
    base = dict(type="synthetic", root="", ann_file="", splits=(), synthetic=synthetic_cfg())
    base.update(kw)
    return DatasetConfig(**base)


def data_cfg(**kw):
    base = dict(train=dataset_cfg(),
                test=dataset_cfg(synthetic=synthetic_cfg(split="val", num_images=5)),
                min_size_train=(96,), max_size_train=200, min_size_test=96, max_size_test=200,
                flip_prob=0.0, images_per_batch=2, test_images_per_batch=2, num_workers=0,
                aspect_ratio_grouping=True, filter_empty=True)
    base.update(kw)
    return DataConfig(**base)
