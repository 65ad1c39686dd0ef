"""Tiny COCO and VOC datasets written to disk for the dataset reliability tests."""
import json
import os
import struct
from typing import Dict, List, Optional

import cv2
import numpy as np

NAMES = ["disc", "square", "triangle"]  # the model's classes, label k = NAMES[k]

# (height, width) of each image: distinct, so a stand-in model can tell the images apart.
SIZES = {1: (40, 60), 2: (48, 64), 3: (56, 40)}

# Ground truth per image: (class name, [x, y, w, h]).
OBJECTS = {
    1: [("disc", [4, 4, 20, 20]), ("square", [30, 10, 20, 16])],
    2: [("triangle", [10, 8, 30, 30]), ("disc", [40, 30, 16, 12])],
    3: [("square", [5, 5, 25, 30]), ("triangle", [2, 40, 30, 12])],
}


def write_image(path: str, height: int, width: int, seed: int = 0) -> None:
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert cv2.imwrite(path, image)


def coco_dict(cat_ids: Dict[str, int], file_names: Optional[Dict[int, str]] = None) -> Dict:
    """An instances dict over SIZES/OBJECTS; ``cat_ids`` gives each class name its id."""
    file_names = file_names or {i: f"{i}.png" for i in SIZES}
    images = [{"id": i, "file_name": file_names[i], "height": h, "width": w}
              for i, (h, w) in SIZES.items()]
    anns = [{"id": 100 * i + j, "image_id": i, "category_id": cat_ids[name], "bbox": box,
             "area": box[2] * box[3], "iscrowd": 0}
            for i, objs in OBJECTS.items() for j, (name, box) in enumerate(objs)]
    cats = [{"id": cid, "name": name} for name, cid in cat_ids.items()]
    return {"images": images, "annotations": anns, "categories": cats}


def write_coco(folder: str, data: Dict, name: str = "ann.json", images: bool = True) -> str:
    """Writes ``data`` as ``folder/name`` and (by default) those of its images that do not
    exist yet, at their stated sizes; returns the JSON path."""
    os.makedirs(folder, exist_ok=True)
    if images:
        for img in data["images"]:
            path = os.path.join(folder, img["file_name"])
            if not os.path.exists(path):
                write_image(path, img["height"], img["width"], seed=img["id"])
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        json.dump(data, f)
    return path


def basic_coco() -> Dict:
    """The three images with categories disc=1, square=2, triangle=3."""
    return coco_dict({"disc": 1, "square": 2, "triangle": 3})


VOC_XML = ("<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
           "{objects}</annotation>")
VOC_OBJ = ("<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin>"
           "<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def write_voc(root: str, items: Dict[str, List[tuple]], image_set: str = "train",
              h: int = 30, w: int = 40, entries: Optional[List[str]] = None) -> str:
    """A VOC2007 tree with ``class_names.txt`` = NAMES; ``items`` maps image name -> objects
    ``(name, xmin, ymin, xmax, ymax)`` (VOC 1-based inclusive). Returns the set file."""
    base = os.path.join(root, "VOC2007")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    with open(os.path.join(root, "class_names.txt"), "w") as f:
        f.write("\n".join(NAMES) + "\n")
    for k, (name, objects) in enumerate(items.items()):
        write_image(os.path.join(base, "JPEGImages", name + ".jpg"), h, w, seed=k)
        objs = "".join(VOC_OBJ.format(name=o[0], x1=o[1], y1=o[2], x2=o[3], y2=o[4])
                       for o in objects)
        with open(os.path.join(base, "Annotations", name + ".xml"), "w") as f:
            f.write(VOC_XML.format(w=w, h=h, objects=objs))
    set_file = os.path.join(base, "ImageSets", "Main", image_set + ".txt")
    with open(set_file, "w") as f:
        f.write("\n".join(entries if entries is not None else list(items)) + "\n")
    return set_file


def jpeg_with_exif_orientation(image_bgr: np.ndarray, orientation: int) -> bytes:
    """A JPEG of ``image_bgr`` with an APP1 EXIF segment holding only the Orientation tag
    (big-endian TIFF header, one IFD entry: tag 0x0112, type SHORT, count 1)."""
    ok, jpeg = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    jpeg = jpeg.tobytes()
    tiff = (b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0))
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]
