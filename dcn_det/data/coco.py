"""COCO-format detection dataset (instances JSON + an image folder), read with pycocotools.

Category ids are mapped once, here, to contiguous labels ``0..K-1`` in increasing id order;
``contiguous_to_cat_id[label]`` maps back when results are written. Crowd boxes never become
training targets. The annotation file is validated when the dataset is built, so a broken file
fails at start-up with its name and the offending entry rather than mid-training.
"""
import contextlib
import io
import json
import logging
import math
import os
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from pycocotools.coco import COCO

from .base import finish_item, load_error, make_target
from .transforms import decode_image

logger = logging.getLogger(__name__)


def _load_json(ann_file: str) -> Dict:
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file!r}")
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"COCO annotation file {ann_file!r} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"COCO annotation file {ann_file!r} must hold a JSON object with "
                         f"'images', 'annotations' and 'categories', got {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"COCO annotation file {ann_file!r} needs a list under {key!r}")
    if not isinstance(data.setdefault("annotations", []), list):
        raise ValueError(f"COCO annotation file {ann_file!r}: 'annotations' must be a list")
    if not data["images"]:
        raise ValueError(f"COCO annotation file {ann_file!r} lists no images")
    if not data["categories"]:
        raise ValueError(f"COCO annotation file {ann_file!r} lists no categories")
    return data


def _check_images(data: Dict, ann_file: str) -> None:
    seen = set()
    for img in data["images"]:
        for key in ("id", "file_name", "height", "width"):
            if key not in img:
                raise ValueError(f"{ann_file}: image entry {img!r} has no {key!r}")
        name = img["file_name"]
        norm = os.path.normpath(name) if isinstance(name, str) else ""
        if (not norm or os.path.isabs(name) or norm == ".." or norm.startswith(".." + os.sep)
                or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")):
            raise ValueError(f"{ann_file}: image id {img['id']} has file_name {name!r}, which "
                             "must be a relative path inside the image root (no '..', not absolute)")
        if img["id"] in seen:
            raise ValueError(f"{ann_file}: image id {img['id']} appears twice in 'images'")
        seen.add(img["id"])


def _clean_annotations(data: Dict, ann_file: str) -> List[Dict]:
    """Validates annotations; returns them without boxes that have NaN or non-positive size."""
    image_ids = {img["id"] for img in data["images"]}
    cat_ids = {c["id"] for c in data["categories"]}
    good, bad = [], []
    for ann in data["annotations"]:
        aid = ann.get("id", "?")
        if ann.get("image_id") not in image_ids:
            raise ValueError(f"{ann_file}: annotation id {aid} refers to image_id "
                             f"{ann.get('image_id')!r}, which is not in 'images'")
        if ann.get("category_id") not in cat_ids:
            raise ValueError(f"{ann_file}: annotation id {aid} has category_id "
                             f"{ann.get('category_id')!r}, not one of the categories {sorted(cat_ids)}")
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise ValueError(f"{ann_file}: annotation id {aid} needs 'bbox' = [x, y, w, h], got {bbox!r}")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            raise ValueError(f"{ann_file}: annotation id {aid} has a non-numeric bbox {bbox!r}") from None
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            bad.append(aid)
            continue
        good.append(ann)
    if bad:
        warnings.warn(f"{ann_file}: ignored {len(bad)} annotation(s) whose bbox has NaN/inf or a "
                      f"non-positive width or height (ids {bad[:10]}{' ...' if len(bad) > 10 else ''})",
                      stacklevel=3)
    return good


class COCODataset:
    """Detection dataset over a COCO instances file.

    Items are ``(image: uint8 (3, H, W) RGB, target)`` with the target format of
    ``dcn_det.data.base.make_target`` (``image_id`` = the COCO image id, crowd boxes left out,
    ``difficult`` all False).

    Args:
        ann_file: COCO instances JSON.
        image_root: folder the images' ``file_name`` entries are relative to.
        transforms: ``(image HWC uint8, target) -> (image, target)``.
        filter_empty: drop images with no usable (non-crowd, valid) box — for training; the
            count is logged. Evaluation datasets keep every image.

    Attributes:
        coco: the ``pycocotools.coco.COCO`` object (annotations with invalid boxes removed).
        class_names: category names in label order.
        contiguous_to_cat_id: ``list[int]``, label -> COCO category id.
        cat_id_to_contiguous: ``dict``, COCO category id -> label.
    """

    def __init__(self, ann_file: str, image_root: str, transforms: Optional[Callable] = None,
                 filter_empty: bool = False):
        data = _load_json(ann_file)
        _check_images(data, ann_file)
        data["annotations"] = _clean_annotations(data, ann_file)
        self.ann_file, self.image_root, self.transforms = ann_file, image_root, transforms
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.contiguous_to_cat_id = [c["id"] for c in cats]
        self.cat_id_to_contiguous = {cid: i for i, cid in enumerate(self.contiguous_to_cat_id)}
        self.class_names = [c.get("name", str(c["id"])) for c in cats]
        ids = sorted(self.coco.imgs)
        if filter_empty:
            kept = [i for i in ids if any(not a.get("iscrowd", 0) for a in self.coco.imgToAnns[i])]
            logger.info("%s: %d of %d images have no usable annotations and are left out of "
                        "training", ann_file, len(ids) - len(kept), len(ids))
            ids = kept
        self.image_ids: List[int] = ids

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_path(self, idx: int) -> str:
        return os.path.join(self.image_root, self.coco.imgs[self.image_ids[idx]]["file_name"])

    def image_hw(self, idx: int) -> Tuple[int, int]:
        """``(h, w)`` from the annotation file (used for aspect-ratio grouping)."""
        img = self.coco.imgs[self.image_ids[idx]]
        return int(img["height"]), int(img["width"])

    def _boxes(self, idx: int):
        anns = self.coco.imgToAnns[self.image_ids[idx]]
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                           a["bbox"][1] + a["bbox"][3]] for a in anns], np.float32).reshape(-1, 4)
        labels = np.array([self.cat_id_to_contiguous[a["category_id"]] for a in anns], np.int64)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
        return boxes, labels, crowd

    def get_annotations(self, idx: int) -> Dict:
        """Untransformed ground truth, crowd regions included and flagged in ``"difficult"``
        (= ignored by evaluation), plus ``"file_name"``."""
        boxes, labels, crowd = self._boxes(idx)
        ann = make_target(boxes, labels, self.image_ids[idx], self.image_hw(idx), crowd)
        ann["file_name"] = self.coco.imgs[self.image_ids[idx]]["file_name"]
        return ann

    def __getitem__(self, idx: int):
        path = self.image_path(idx)
        try:
            image = decode_image(path)
            boxes, labels, crowd = self._boxes(idx)
            target = make_target(boxes[~crowd], labels[~crowd], self.image_ids[idx], image.shape[:2])
            return finish_item(image, target, self.transforms)
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise load_error(path, idx, e) from e
