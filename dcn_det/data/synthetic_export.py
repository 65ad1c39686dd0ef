"""Writes a synthetic dataset to disk as COCO JSON + images or as a VOCdevkit tree.

Both writers store exactly the annotations of the in-memory dataset, so a model trained on
either file format sees the same boxes (images written as JPEG differ by compression only).

COCO layout (``write_coco(ds, "DIR")`` with ``ds.split == "train"``)::

    DIR/annotations/instances_train.json   categories 1..K named after the shapes
    DIR/train/000001.png ...               file_name is relative to DIR/train

VOC layout (``write_voc(ds, "DIR")``, readable by ``VOCDataset("DIR", ["2007/train"])``)::

    DIR/VOC2007/Annotations/train_000001.xml
    DIR/VOC2007/JPEGImages/train_000001.jpg
    DIR/VOC2007/ImageSets/Main/train.txt
    DIR/class_names.txt                    one class name per line (not the 20 VOC classes)
"""
import json
import multiprocessing
import os
from typing import Any, Dict, Iterator, List, Tuple
from xml.sax.saxutils import escape

import cv2

_WRITE_FLAGS = {"png": [cv2.IMWRITE_PNG_COMPRESSION, 1], "jpg": [cv2.IMWRITE_JPEG_QUALITY, 95]}


def _write_image(path: str, image_rgb) -> None:
    ext = os.path.splitext(path)[1][1:].lower()
    if not cv2.imwrite(path, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), _WRITE_FLAGS.get(ext, [])):
        raise RuntimeError(f"could not write image file {path!r}")


def _render_and_write(job: Tuple[Any, int, str]) -> Dict[str, Any]:
    """Generates image ``idx`` of ``dataset``, writes it to ``path``; returns its annotations."""
    dataset, idx, path = job
    s = dataset.generate(idx)
    _write_image(path, s["image"])
    h, w = s["image"].shape[:2]
    return {"height": h, "width": w, "boxes": s["boxes"].tolist(), "labels": s["labels"].tolist(),
            "areas": s["areas"].tolist()}


def _written_samples(dataset, paths: List[str], workers: int) -> Iterator[Dict[str, Any]]:
    """Renders and writes image ``i`` to ``paths[i]``; yields the annotations in index order.

    Drawing and PNG encoding dominate a large split, and each image is independent, so
    ``workers > 1`` spreads them over processes (fork: the dataset is not re-built).
    """
    jobs = [(dataset, idx, path) for idx, path in enumerate(paths)]
    if workers <= 1 or len(jobs) < 2 * workers:
        yield from map(_render_and_write, jobs)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(_render_and_write, jobs, chunksize=16)


def _write_class_names(path: str, names: List[str]) -> None:
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            existing = [line.strip() for line in f if line.strip()]
        if existing != list(names):
            raise ValueError(f"{path} already lists classes {existing}, which differ from this "
                             f"dataset's {list(names)}; write to another directory")
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(names) + "\n")


def write_coco(dataset, output_dir: str, image_format: str = "png", workers: int = 1) -> str:
    """Writes ``dataset`` (a ``SyntheticDataset``) in COCO format.

    Args:
        dataset: the in-memory dataset; its ``split`` names the image folder and JSON file.
        output_dir: root folder (created).
        image_format: ``"png"`` (lossless) or ``"jpg"``.
        workers: processes that draw and encode the images (the files are the same).

    Returns:
        the path of the annotation JSON.
    """
    if image_format not in _WRITE_FLAGS:
        raise ValueError(f"image_format must be one of {sorted(_WRITE_FLAGS)}, got {image_format!r}")
    split = dataset.split
    image_dir = os.path.join(output_dir, split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.join(output_dir, "annotations"), exist_ok=True)
    images, annotations = [], []
    file_names = [f"{idx + 1:06d}.{image_format}" for idx in range(len(dataset))]
    paths = [os.path.join(image_dir, n) for n in file_names]
    for idx, s in enumerate(_written_samples(dataset, paths, workers)):
        images.append({"id": idx + 1, "file_name": file_names[idx], "height": s["height"],
                       "width": s["width"]})
        for box, label, area in zip(s["boxes"], s["labels"], s["areas"]):
            x1, y1, x2, y2 = box
            annotations.append({"id": len(annotations) + 1, "image_id": idx + 1,
                                "category_id": label + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": area, "iscrowd": 0})
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"}
                  for i, n in enumerate(dataset.class_names)]
    ann_file = os.path.join(output_dir, "annotations", f"instances_{split}.json")
    with open(ann_file, "w", encoding="utf-8") as f:
        json.dump({"info": {"description": f"dcn_det synthetic shapes, split {split}, "
                                           f"seed {dataset.seed}"},
                   "images": images, "annotations": annotations, "categories": categories}, f)
    return ann_file


def write_voc(dataset, root: str, year: str = "2007", workers: int = 1) -> str:
    """Writes ``dataset`` as a VOCdevkit tree (JPEG images, one XML per image).

    VOC boxes are 1-based inclusive pixel indices; a synthetic box ``[x0, y0, x1 + 1, y1 + 1]``
    (continuous frame) is written as ``xmin = x0 + 1, ..., xmax = x1 + 1``, which
    ``VOCDataset`` maps back exactly. ``class_names.txt`` at the root tells ``VOCDataset``
    the shape classes.

    Args:
        dataset: the in-memory dataset; its ``split`` names the image set.
        root: the VOCdevkit folder (created).
        year: the ``VOC<year>`` sub-folder.
        workers: processes that draw and encode the images (the files are the same).

    Returns:
        the path of the image-set file.
    """
    base = os.path.join(root, f"VOC{year}")
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    _write_class_names(os.path.join(root, "class_names.txt"), dataset.class_names)
    names = [f"{dataset.split}_{idx + 1:06d}" for idx in range(len(dataset))]
    paths = [os.path.join(base, "JPEGImages", name + ".jpg") for name in names]
    for name, s in zip(names, _written_samples(dataset, paths, workers)):
        h, w = s["height"], s["width"]
        objects = []
        for (x1, y1, x2, y2), label in zip(s["boxes"], s["labels"]):
            objects.append(
                f"  <object>\n    <name>{escape(dataset.class_names[label])}</name>\n"
                f"    <pose>Unspecified</pose>\n    <truncated>0</truncated>\n"
                f"    <difficult>0</difficult>\n    <bndbox>\n"
                f"      <xmin>{int(x1) + 1}</xmin>\n      <ymin>{int(y1) + 1}</ymin>\n"
                f"      <xmax>{int(x2)}</xmax>\n      <ymax>{int(y2)}</ymax>\n"
                f"    </bndbox>\n  </object>\n")
        xml = (f"<annotation>\n  <folder>VOC{year}</folder>\n  <filename>{name}.jpg</filename>\n"
               f"  <size>\n    <width>{w}</width>\n    <height>{h}</height>\n"
               f"    <depth>3</depth>\n  </size>\n  <segmented>0</segmented>\n"
               + "".join(objects) + "</annotation>\n")
        with open(os.path.join(base, "Annotations", name + ".xml"), "w", encoding="utf-8") as f:
            f.write(xml)
    set_file = os.path.join(base, "ImageSets", "Main", f"{dataset.split}.txt")
    with open(set_file, "w", encoding="utf-8") as f:
        f.write("\n".join(names) + "\n")
    return set_file
