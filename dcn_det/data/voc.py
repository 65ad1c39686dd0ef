"""Pascal VOC detection dataset over a VOCdevkit tree.

Layout: ``<root>/VOC<year>/Annotations/<name>.xml``, ``JPEGImages/<name>.jpg`` and
``ImageSets/Main/<set>.txt``. Several ``"<year>/<set>"`` splits are concatenated (07+12).

Box convention: VOC stores 1-based, inclusive pixel indices (``xmin = 1`` is the first column,
``xmax = W`` the last). In our continuous frame pixel ``i`` (0-based) covers ``[i, i+1)``, so a
VOC box becomes ``(xmin - 1, ymin - 1, xmax, ymax)``: the full image is ``[0, 0, W, H]`` and
the box width is ``xmax - xmin + 1``, the pixel count VOC's own evaluation uses.

Checks: an image-set entry must be a plain name (no path separator, not absolute, not ``..``),
so nothing outside ``VOC<year>/`` is read; every listed image file must exist (all missing
ones are reported at once); ``<size>`` must be positive integers and equal the decoded image's
size; objects whose box has NaN/inf, a negative size or no area inside the image are left out
with one counted warning per image set.
"""
import logging
import math
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from defusedxml import DefusedXmlException, ElementTree

from .base import DatasetError, check_image_size, finish_item, load_error, make_target
from .dropped import DroppedBoxes
from .files import require_image_files
from .transforms import decode_image

logger = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
CLASS_NAMES_FILE = "class_names.txt"


def _text(node, tag: str, xml_file: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(f"VOC annotation {xml_file!r}: missing <{tag}>")
    return child.text.strip()


def _number(node, tag: str, xml_file: str) -> float:
    text = _text(node, tag, xml_file)
    try:
        return float(text)
    except ValueError:
        raise DatasetError(f"VOC annotation {xml_file!r}: <{tag}> is {text!r}, not a number") \
            from None


def _size(node, tag: str, xml_file: str) -> int:
    value = _number(node, tag, xml_file)
    if not (math.isfinite(value) and value.is_integer() and value > 0):
        raise DatasetError(f"VOC annotation {xml_file!r}: <size><{tag}> is {value:g}; height and "
                           "width must be positive integers (pixels)")
    return int(value)


def parse_voc_xml(xml_file: str, class_to_label: Dict[str, int]) -> Dict:
    """Reads one annotation file.

    Returns:
        ``{"height", "width", "boxes": (M, 4) float32 continuous XYXY, "labels": (M,) int64,
        "difficult": (M,) bool}``, every object of the file (NaN or degenerate boxes
        included: the dataset counts and leaves them out).

    Raises:
        FileNotFoundError / DatasetError naming ``xml_file`` for a missing file, malformed XML,
        missing fields or a class name not in ``class_to_label``.
    """
    if not os.path.isfile(xml_file):
        raise FileNotFoundError(f"VOC annotation file not found: {xml_file!r}")
    try:
        root = ElementTree.parse(xml_file).getroot()
    except (ElementTree.ParseError, DefusedXmlException) as e:
        raise DatasetError(f"VOC annotation {xml_file!r} is not valid (or unsafe) XML: {e}") from e
    size = root.find("size")
    if size is None:
        raise DatasetError(f"VOC annotation {xml_file!r}: missing <size>")
    width, height = _size(size, "width", xml_file), _size(size, "height", xml_file)
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        name = _text(obj, "name", xml_file)
        if name not in class_to_label:
            raise DatasetError(f"VOC annotation {xml_file!r}: unknown class name {name!r}; "
                             f"known classes: {sorted(class_to_label)}")
        box = obj.find("bndbox")
        if box is None:
            raise DatasetError(f"VOC annotation {xml_file!r}: object {name!r} has no <bndbox>")
        x1, y1, x2, y2 = (_number(box, t, xml_file) for t in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([x1 - 1.0, y1 - 1.0, x2, y2])
        labels.append(class_to_label[name])
        diff = obj.find("difficult")
        difficult.append(diff is not None and (diff.text or "0").strip() not in ("", "0"))
    return {"height": height, "width": width,
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "labels": np.asarray(labels, np.int64), "difficult": np.asarray(difficult, bool)}


def check_set_entry(name: str, set_file: str, line: int) -> None:
    """Refuses an image-set entry that is not a plain image name (it would be looked up
    outside ``JPEGImages/`` and ``Annotations/``)."""
    if (name in (".", "..") or "/" in name or "\\" in name or os.path.isabs(name)
            or (len(name) > 1 and name[1] == ":") or "\x00" in name):
        raise DatasetError(f"{set_file}, line {line}: image name {name!r} must be a plain file "
                           "name without a path (no '/', '\\', '..' or drive)")


def _read_set_file(set_file: str) -> List[str]:
    names = []
    with open(set_file, encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            if text.strip():
                names.append(text.split()[0])
                check_set_entry(names[-1], set_file, line)
    return names


def _keep_boxes(rec: Dict, dropped: DroppedBoxes) -> None:
    """Leaves out (and counts) the objects of ``rec`` whose box cannot be a target."""
    keep = np.array([dropped.check(f"{rec['name']} object {j}", box.tolist(), rec["height"],
                                   rec["width"]) for j, box in enumerate(rec["boxes"])], bool)
    for key in ("boxes", "labels", "difficult"):
        rec[key] = rec[key][keep]


def _read_class_names(root: str) -> Tuple[str, ...]:
    path = os.path.join(root, CLASS_NAMES_FILE)
    if not os.path.isfile(path):
        return VOC_CLASSES
    with open(path, encoding="utf-8") as f:
        names = tuple(line.strip() for line in f if line.strip())
    if not names or len(set(names)) != len(names):
        raise DatasetError(f"{path} must list distinct class names, one per line; got {names!r}")
    return names


class VOCDataset:
    """Pascal VOC (or a VOC-layout) detection dataset.

    Items are ``(image: uint8 (3, H, W) RGB, target)`` with the target format of
    ``dcn_det.data.base.make_target``; ``image_id`` is the image's position in the
    concatenation of ``splits``.

    Args:
        root: the VOCdevkit folder (holding ``VOC2007``, ``VOC2012``, ...).
        splits: ``"<year>/<image set>"`` entries, e.g. ``["2007/trainval", "2012/trainval"]``.
        transforms: ``(image HWC uint8, target) -> (image, target)``.
        class_names: label order; None = ``<root>/class_names.txt`` when present (written for
            the synthetic data), otherwise the 20 VOC classes in the standard order.
        keep_difficult: keep ``difficult`` objects (flagged) in the targets; training leaves
            them out, evaluation keeps them.
        filter_empty: drop images without a box the targets would use (for training; logged).
        check_files: raise when listed image files are missing (all named at once); False
            lets ``data.check`` list them with the other problems.

    Attributes:
        source: the image-set files, named in errors and reports.
        dropped: ``[DroppedBoxes]``, one per split: the objects left out, by reason.
    """

    def __init__(self, root: str, splits: Sequence[str], transforms: Optional[Callable] = None,
                 class_names: Optional[Sequence[str]] = None, keep_difficult: bool = False,
                 filter_empty: bool = False, check_files: bool = True):
        if isinstance(splits, str) or not splits:
            raise DatasetError(f"splits must be a non-empty list like ['2007/trainval'], got {splits!r}")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"VOCdevkit root not found: {root!r}")
        self.root, self.transforms, self.keep_difficult = root, transforms, keep_difficult
        self.class_names = list(class_names) if class_names is not None else list(_read_class_names(root))
        class_to_label = {n: i for i, n in enumerate(self.class_names)}
        self.records: List[Dict] = []
        self.dropped: List[DroppedBoxes] = []
        set_files = []
        for split in splits:
            parts = split.split("/") if isinstance(split, str) else []
            if len(parts) != 2 or not all(parts):
                raise DatasetError(f"each split must be '<year>/<image set>', e.g. '2007/trainval'; "
                                 f"got {split!r}")
            year, image_set = parts
            base = os.path.join(root, f"VOC{year}")
            set_file = os.path.join(base, "ImageSets", "Main", image_set + ".txt")
            if not os.path.isfile(set_file):
                raise FileNotFoundError(f"VOC image set file not found: {set_file!r} (split {split!r})")
            set_files.append(set_file)
            dropped = DroppedBoxes(set_file, "object")
            for name in _read_set_file(set_file):
                xml_file = os.path.join(base, "Annotations", name + ".xml")
                rec = parse_voc_xml(xml_file, class_to_label)
                rec.update(name=name, image_file=os.path.join(base, "JPEGImages", name + ".jpg"),
                           xml_file=xml_file, image_id=len(self.records))
                _keep_boxes(rec, dropped)
                self.records.append(rec)
            dropped.warn()
            self.dropped.append(dropped)
        self.source = ", ".join(set_files)
        if check_files:
            require_image_files([r["image_file"] for r in self.records], self.source)
        if not self.records:
            raise DatasetError(f"VOC splits {list(splits)} under {root!r} list no images")
        if filter_empty:
            n = len(self.records)
            self.records = [r for r in self.records if len(r["labels"]) > 0
                            and (keep_difficult or not r["difficult"].all())]
            logger.info("VOC %s: %d of %d images have no usable objects and are left out of "
                        "training", list(splits), n - len(self.records), n)

    def __len__(self) -> int:
        return len(self.records)

    def image_path(self, idx: int) -> str:
        """The image file of item ``idx``."""
        return self.records[idx]["image_file"]

    def load_image(self, idx: int) -> np.ndarray:
        """The decoded ``(H, W, 3) uint8`` RGB image of item ``idx``, of its ``<size>``.

        Raises:
            FileNotFoundError / RuntimeError: the file is missing or not decodable.
            DatasetError: its size is not the annotation's ``<size>``.
        """
        r = self.records[idx]
        image = decode_image(r["image_file"])
        check_image_size(image, (r["height"], r["width"]), r["image_file"], r["xml_file"])
        return image

    def image_hw(self, idx: int) -> Tuple[int, int]:
        """``(h, w)`` from the annotation's ``<size>`` (used for aspect-ratio grouping)."""
        r = self.records[idx]
        return r["height"], r["width"]

    def get_annotations(self, idx: int) -> Dict:
        """Untransformed ground truth, difficult objects included and flagged, plus
        ``"file_name"`` (the VOC image name)."""
        r = self.records[idx]
        ann = make_target(r["boxes"], r["labels"], r["image_id"], (r["height"], r["width"]),
                          r["difficult"])
        ann["file_name"] = r["name"]
        return ann

    def __getitem__(self, idx: int):
        r = self.records[idx]
        try:
            image = self.load_image(idx)
            keep = np.ones(len(r["labels"]), bool) if self.keep_difficult else ~r["difficult"]
            target = make_target(r["boxes"][keep], r["labels"][keep], r["image_id"],
                                 image.shape[:2], r["difficult"][keep])
            return finish_item(image, target, self.transforms)
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise load_error(r["image_file"], idx, e) from e
