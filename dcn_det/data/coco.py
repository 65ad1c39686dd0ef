"""COCO-format detection dataset (instances JSON + an image folder), read with pycocotools.

Category ids are mapped once, here, to contiguous labels ``0..K-1`` in increasing id order;
``contiguous_to_cat_id[label]`` maps back when results are written. Crowd boxes never become
training targets. The annotation file is validated when the dataset is built
(``coco_file``), so a broken file fails at start-up with its name and the offending entry
rather than mid-training; boxes that cannot be targets are left out with one counted warning.
Each decoded image must have the size its entry states (``base.check_image_size``).
"""
import contextlib
import io
import logging
import os
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from pycocotools.coco import COCO

from .base import check_image_size, finish_item, load_error, make_target
from .coco_file import check_categories, check_images, clean_annotations, load_coco_json
from .transforms import decode_image

logger = logging.getLogger(__name__)


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
        source: ``ann_file`` (named in errors and reports).
        dropped: ``[DroppedBoxes]``, the boxes left out of ``ann_file``, by reason.
        class_names: category names in label order.
        contiguous_to_cat_id: ``list[int]``, label -> COCO category id.
        cat_id_to_contiguous: ``dict``, COCO category id -> label.
    """

    def __init__(self, ann_file: str, image_root: str, transforms: Optional[Callable] = None,
                 filter_empty: bool = False):
        data = load_coco_json(ann_file)
        check_categories(data, ann_file)
        check_images(data, ann_file)
        data["annotations"], dropped = clean_annotations(data, ann_file)
        dropped.warn()
        self.ann_file, self.image_root, self.transforms = ann_file, image_root, transforms
        self.source, self.dropped = ann_file, [dropped]
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.contiguous_to_cat_id = [c["id"] for c in cats]
        self.cat_id_to_contiguous = {cid: i for i, cid in enumerate(self.contiguous_to_cat_id)}
        self.class_names = [c["name"] for c in cats]
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
        """The image file of item ``idx``."""
        return os.path.join(self.image_root, self.coco.imgs[self.image_ids[idx]]["file_name"])

    def load_image(self, idx: int) -> np.ndarray:
        """The decoded ``(H, W, 3) uint8`` RGB image of item ``idx``, of its stated size.

        Raises:
            FileNotFoundError / RuntimeError: the file is missing or not decodable.
            DatasetError: its size is not the annotation's ``height`` x ``width``.
        """
        path = self.image_path(idx)
        image = decode_image(path)
        check_image_size(image, self.image_hw(idx), path,
                         f"{self.ann_file}: image id {self.image_ids[idx]}")
        return image

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
            image = self.load_image(idx)
            boxes, labels, crowd = self._boxes(idx)
            target = make_target(boxes[~crowd], labels[~crowd], self.image_ids[idx], image.shape[:2])
            return finish_item(image, target, self.transforms)
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise load_error(path, idx, e) from e
