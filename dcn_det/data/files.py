"""That every image file a dataset lists exists, checked once before it is used.

A missing file found mid-training stops the run hours in, and only names itself; checking
every path first (a ``stat`` per image) names all of them at once.
"""
import os
from typing import Sequence

SHOWN_FILES = 5  # missing files named in the error


def require_image_files(paths: Sequence[str], source: str) -> None:
    """Raises when any of ``paths`` is not a file.

    Args:
        paths: the image files, in dataset order.
        source: the annotation file(s) that list them, named in the error.

    Raises:
        FileNotFoundError: the count of missing files, the first few and ``source``.
    """
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(repr(p) for p in missing[:SHOWN_FILES])
        more = f", ... {len(missing) - SHOWN_FILES} more" if len(missing) > SHOWN_FILES else ""
        raise FileNotFoundError(f"{len(missing)} of {len(paths)} image files listed in {source} "
                                f"are missing: {shown}{more}")


def require_dataset_files(dataset) -> None:
    """``require_image_files`` over a dataset with ``image_path(idx)`` and ``source``
    (COCO, VOC); a dataset generated in memory (no ``image_path``) has nothing to check."""
    if hasattr(dataset, "image_path"):
        require_image_files([dataset.image_path(i) for i in range(len(dataset))], dataset.source)
