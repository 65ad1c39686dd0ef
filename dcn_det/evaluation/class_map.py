"""Matching a model's classes with a test dataset's, by name.

A model's label ``k`` means ``class_names[k]`` as stored in its checkpoint or inference file
(the training set's names in label order). A dataset's label ``m`` means its
``class_names[m]``; for COCO that order follows the category ids, so the same classes under
other ids come in another order. Detections are therefore mapped by name, label ``k`` ->
``dataset.class_names.index(class_names[k])``, and classes that cannot be matched (other
names, another count) are an error that lists both; evaluating in label order would score the
wrong classes against each other without a word.
"""
import logging
from typing import List, Optional, Sequence

from dcn_det.data.base import DatasetError

logger = logging.getLogger(__name__)


def is_default_names(names: Sequence[str]) -> bool:
    """True for ``class_0 .. class_{K-1}``, the names of a checkpoint that stores none."""
    return list(names) == [f"class_{i}" for i in range(len(names))]


def _mismatch(model_names: List[str], dataset_names: List[str], model_source: str,
              dataset_source: str, why: str) -> DatasetError:
    only_model = [n for n in model_names if n not in dataset_names]
    only_data = [n for n in dataset_names if n not in model_names]
    extra = ""
    if only_model or only_data:
        extra = f" (only in the model: {only_model}; only in the dataset: {only_data})"
    return DatasetError(f"the classes of {model_source} do not match those of {dataset_source}: "
                        f"{why}{extra}. Model classes ({len(model_names)}): {model_names}. "
                        f"Dataset classes ({len(dataset_names)}): {dataset_names}")


def model_to_dataset_labels(model_names: Sequence[str], dataset_names: Sequence[str],
                            model_source: str, dataset_source: str) -> Optional[List[int]]:
    """The dataset label of each model label, matched by class name.

    Args:
        model_names: the model's K class names in label order (``class_names`` of its file).
        dataset_names: the dataset's class names in label order.
        model_source: how errors name the model (its file).
        dataset_source: how errors name the dataset (its annotation file).

    Returns:
        None when the labels already agree (same names in the same order, or default names
        ``class_0..`` with the same count, which are not checked: a warning says so);
        otherwise ``mapping`` with ``mapping[k]`` = the dataset label of model label ``k``.

    Raises:
        DatasetError: other counts, other names or repeated names; lists both sets of names.
    """
    model_names, dataset_names = list(model_names), list(dataset_names)
    if model_names == dataset_names:
        return None
    if len(model_names) != len(dataset_names):
        raise _mismatch(model_names, dataset_names, model_source, dataset_source,
                        f"{len(model_names)} classes vs {len(dataset_names)}")
    if is_default_names(model_names):
        logger.warning("%s stores no class names (class_0..class_%d): its classes cannot be "
                       "checked against %s; label k is taken to be the dataset's class k (%s)",
                       model_source, len(model_names) - 1, dataset_source, dataset_names)
        return None
    for names, whose in ((model_names, "the model"), (dataset_names, "the dataset")):
        if len(set(names)) != len(names):
            raise _mismatch(model_names, dataset_names, model_source, dataset_source,
                            f"{whose} repeats a class name")
    if set(model_names) != set(dataset_names):
        raise _mismatch(model_names, dataset_names, model_source, dataset_source,
                        "the class names differ")
    mapping = [dataset_names.index(n) for n in model_names]
    logger.info("%s lists the classes of %s in another order; detections are mapped by name "
                "(model label -> dataset label %s)", dataset_source, model_source, mapping)
    return mapping
