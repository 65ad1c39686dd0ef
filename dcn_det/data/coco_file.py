"""Reading and validating a COCO instances file before pycocotools sees it.

Every malformed entry is a ``DatasetError`` that names the file and the entry (its id, or its
position when it has no usable id), so a broken file fails at start-up with one line instead
of a ``KeyError`` or ``TypeError`` from inside pycocotools or, later, mid-training.

What is accepted:
    images: objects with an integer ``id`` (unique), a relative ``file_name`` inside the image
        root, and ``height`` / ``width`` as positive integers (an integral float such as
        ``480.0`` counts as an integer).
    categories: objects with an integer ``id`` and a non-empty string ``name``, both unique
        (a model's labels are matched with a dataset's classes by name).
    annotations: objects with an integer ``id`` (unique), the ``image_id`` of an image, the
        ``category_id`` of a category, ``bbox = [x, y, w, h]`` of four real numbers (int or
        float, not bool, string or list), ``iscrowd`` 0/1 (default 0) and ``area`` a finite
        number >= 0 (default: the box area ``w * h``).
Boxes with NaN/inf, a zero or negative size, or no area inside the stated image are left out
and counted (``dropped.DroppedBoxes``).
"""
import json
import logging
import math
import os
from typing import Any, Dict, List, Tuple

from .base import DatasetError
from .dropped import DroppedBoxes

logger = logging.getLogger(__name__)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def is_int(value: Any) -> bool:
    """An integer that is not a bool (JSON ``true`` is not an id)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A Python int or float that is not a bool (finite or not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_positive_int(value: Any) -> bool:
    """A positive integer, or a float with a positive integral value."""
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer() and value > 0
    return is_int(value) and value > 0


def load_coco_json(ann_file: str) -> Dict:
    """Reads ``ann_file`` and checks its top level (lists of images, categories, annotations).

    Raises:
        FileNotFoundError: the file does not exist.
        DatasetError: not JSON, not an object, or a missing or empty list (names the file).
    """
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file!r}")
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"COCO annotation file {ann_file!r} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise DatasetError(f"COCO annotation file {ann_file!r} must hold a JSON object with "
                           f"'images', 'annotations' and 'categories', got {type(data).__name__}")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"COCO annotation file {ann_file!r} needs a list under {key!r}")
    if not isinstance(data.setdefault("annotations", []), list):
        raise DatasetError(f"COCO annotation file {ann_file!r}: 'annotations' must be a list")
    if not data["images"]:
        raise DatasetError(f"COCO annotation file {ann_file!r} lists no images")
    if not data["categories"]:
        raise DatasetError(f"COCO annotation file {ann_file!r} lists no categories")
    return data


def check_categories(data: Dict, ann_file: str) -> None:
    """Checks ``data["categories"]``: objects with unique integer ids and unique names."""
    ids: Dict[int, str] = {}
    names: Dict[str, int] = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict):
            raise DatasetError(f"{ann_file}: categories[{i}] must be an object with 'id' and "
                               f"'name', got {_short(cat)}")
        if "id" not in cat:
            raise DatasetError(f"{ann_file}: categories[{i}] {_short(cat)} has no 'id'")
        cid, name = cat["id"], cat.get("name")
        if not is_int(cid):
            raise DatasetError(f"{ann_file}: categories[{i}] has id {_short(cid)}; category "
                               "ids must be integers")
        if not isinstance(name, str) or not name.strip():
            raise DatasetError(f"{ann_file}: category id {cid} has name {_short(name)}; each "
                               "category needs a non-empty string 'name'")
        if cid in ids:
            raise DatasetError(f"{ann_file}: category id {cid} appears twice in 'categories' "
                               f"(names {ids[cid]!r} and {name!r})")
        if name in names:
            raise DatasetError(f"{ann_file}: category name {name!r} is used by ids {names[name]} "
                               f"and {cid}; names must be distinct (a model's classes are "
                               "matched with a dataset's by name)")
        ids[cid], names[name] = name, cid


def _check_file_name(name: Any, image_id: int, ann_file: str) -> None:
    norm = os.path.normpath(name) if isinstance(name, str) else ""
    if (not norm or os.path.isabs(name) or norm == ".." or norm.startswith(".." + os.sep)
            or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":")
            or "\x00" in name):
        raise DatasetError(f"{ann_file}: image id {image_id} has file_name {name!r}, which must "
                           "be a relative path inside the image root (no '..', not absolute)")


def check_images(data: Dict, ann_file: str) -> None:
    """Checks ``data["images"]``: ids, relative file names inside the root, positive sizes."""
    seen = set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise DatasetError(f"{ann_file}: images[{i}] must be an object with 'id', "
                               f"'file_name', 'height' and 'width', got {_short(img)}")
        for key in ("id", "file_name", "height", "width"):
            if key not in img:
                raise DatasetError(f"{ann_file}: image entry {_short(img)} has no {key!r}")
        iid = img["id"]
        if not is_int(iid):
            raise DatasetError(f"{ann_file}: images[{i}] has id {_short(iid)}; image ids must "
                               "be integers")
        for key in ("height", "width"):
            if not is_positive_int(img[key]):
                raise DatasetError(f"{ann_file}: image id {iid} has {key} {_short(img[key])}; "
                                   "height and width must be positive integers (pixels)")
            img[key] = int(img[key])
        _check_file_name(img["file_name"], iid, ann_file)
        if iid in seen:
            raise DatasetError(f"{ann_file}: image id {iid} appears twice in 'images'")
        seen.add(iid)


def _annotation_id(ann: Any, i: int, seen: set, ann_file: str) -> int:
    if not isinstance(ann, dict):
        raise DatasetError(f"{ann_file}: annotations[{i}] must be an object, got {_short(ann)}")
    if "id" not in ann:
        raise DatasetError(f"{ann_file}: annotations[{i}] (image_id "
                           f"{_short(ann.get('image_id'))}) has no 'id'")
    aid = ann["id"]
    if not is_int(aid):
        raise DatasetError(f"{ann_file}: annotations[{i}] has id {_short(aid)}; annotation ids "
                           "must be integers")
    if aid in seen:
        raise DatasetError(f"{ann_file}: annotation id {aid} appears twice in 'annotations'")
    seen.add(aid)
    return aid


def _bbox(ann: Dict, aid: int, ann_file: str) -> Tuple[float, float, float, float]:
    bbox = ann.get("bbox")
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        raise DatasetError(f"{ann_file}: annotation id {aid} needs 'bbox' = [x, y, w, h], got "
                           f"{_short(bbox)}")
    if not all(is_real(v) for v in bbox):
        raise DatasetError(f"{ann_file}: annotation id {aid} has bbox {_short(bbox)}; its four "
                           "values must be numbers (not strings, booleans or lists)")
    x, y, w, h = (float(v) for v in bbox)
    return x, y, w, h


def clean_annotations(data: Dict, ann_file: str) -> Tuple[List[Dict], DroppedBoxes]:
    """Checks ``data["annotations"]`` against the (checked) images and categories.

    Returns:
        ``(kept annotations, DroppedBoxes)``: annotations whose box cannot be a target are left
        out and counted; a missing ``area`` is set to the box area (and logged).

    Raises:
        DatasetError: a malformed annotation (names the file and the annotation id).
    """
    sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
    cat_ids = {c["id"] for c in data["categories"]}
    dropped = DroppedBoxes(ann_file, "annotation")
    seen: set = set()
    good, no_area = [], 0
    for i, ann in enumerate(data["annotations"]):
        aid = _annotation_id(ann, i, seen, ann_file)
        image_id, cat_id = ann.get("image_id"), ann.get("category_id")
        if not is_int(image_id) or image_id not in sizes:
            raise DatasetError(f"{ann_file}: annotation id {aid} refers to image_id "
                               f"{_short(image_id)}, which is not in 'images'")
        if not is_int(cat_id) or cat_id not in cat_ids:
            raise DatasetError(f"{ann_file}: annotation id {aid} has category_id "
                               f"{_short(cat_id)}, not one of the categories {sorted(cat_ids)}")
        x, y, w, h = _bbox(ann, aid, ann_file)
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1) or not isinstance(crowd, (int, bool)):
            raise DatasetError(f"{ann_file}: annotation id {aid} has iscrowd {_short(crowd)}; "
                               "it must be 0 or 1")
        if "area" not in ann:
            no_area += 1
        elif not is_real(ann["area"]) or not math.isfinite(ann["area"]) or ann["area"] < 0:
            raise DatasetError(f"{ann_file}: annotation id {aid} has area {_short(ann['area'])}; "
                               "it must be a finite number >= 0")
        if dropped.check(aid, (x, y, x + w, y + h), *sizes[image_id]):
            if "area" not in ann:
                ann["area"] = w * h  # COCOeval's size ranges read it
            good.append(ann)
    if no_area:
        logger.info("%s: %d annotation(s) have no 'area'; their box area w*h is used for the "
                    "small/medium/large APs", ann_file, no_area)
    return good, dropped
