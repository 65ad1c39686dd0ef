"""Checking a whole COCO or VOC dataset on disk: every annotation and every image.

Building the dataset validates the annotations (a malformed entry is a ``DatasetError``) and
counts the boxes left out; :func:`check_dataset` then decodes every image, compares its size
with the stated one and counts the boxes per class. ``tools/check_dataset.py`` prints the
resulting :class:`DatasetReport` and exits non-zero when it is not ``ok``.
"""
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

from dcn_det.progress import progress as progress_of

from .base import DatasetError
from .coco import COCODataset
from .dropped import REASONS
from .voc import VOCDataset

SHOWN_PROBLEMS = 20  # unreadable files / size mismatches listed in the summary


@dataclasses.dataclass
class DatasetReport:
    """What :func:`check_dataset` found.

    Attributes:
        source: the annotation file(s).
        images: images listed.
        decodable: images that decode (whatever their size).
        unreadable: ``(image file, why)`` of the missing or undecodable images.
        size_mismatches: the error of each image whose decoded size is not the stated one.
        boxes: boxes kept as ground truth (crowd / difficult ones included).
        ignored: of those, crowd (COCO) or difficult (VOC) boxes, ignored by evaluation.
        dropped: reason (``dropped.REASONS``) -> boxes left out.
        per_class: class name -> boxes kept.
        empty_images: images without any kept box.
    """

    source: str
    images: int = 0
    decodable: int = 0
    unreadable: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    size_mismatches: List[str] = dataclasses.field(default_factory=list)
    boxes: int = 0
    ignored: int = 0
    dropped: Dict[str, int] = dataclasses.field(default_factory=dict)
    per_class: Dict[str, int] = dataclasses.field(default_factory=dict)
    empty_images: int = 0

    @property
    def problems(self) -> List[str]:
        """One phrase per kind of problem found; empty when the dataset is fine."""
        out = []
        if self.unreadable:
            out.append(f"{len(self.unreadable)} unreadable image(s)")
        if self.size_mismatches:
            out.append(f"{len(self.size_mismatches)} image size mismatch(es)")
        if sum(self.dropped.values()):
            out.append(f"{sum(self.dropped.values())} box(es) left out")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        """The printed summary."""
        lines = [f"dataset: {self.source}",
                 f"images: {self.images}",
                 f"  decodable: {self.decodable}",
                 f"  unreadable: {len(self.unreadable)}"]
        lines += [f"    {path}: {why}" for path, why in self.unreadable[:SHOWN_PROBLEMS]]
        lines += _more(self.unreadable)
        lines.append(f"  size mismatches: {len(self.size_mismatches)}")
        lines += [f"    {msg}" for msg in self.size_mismatches[:SHOWN_PROBLEMS]]
        lines += _more(self.size_mismatches)
        lines.append(f"  without boxes: {self.empty_images}")
        n_dropped = sum(self.dropped.values())
        lines.append(f"annotations: {self.boxes + n_dropped}")
        lines.append(f"  boxes kept: {self.boxes} ({self.ignored} crowd/difficult, ignored by "
                     "evaluation)")
        lines.append(f"  boxes left out: {n_dropped} ("
                     + ", ".join(f"{self.dropped.get(r, 0)} {r}" for r in REASONS) + ")")
        lines.append("boxes per class:")
        width = max((len(n) for n in self.per_class), default=0)
        lines += [f"  {name:<{width}}  {count}" for name, count in self.per_class.items()]
        lines.append("result: OK" if self.ok else "result: PROBLEMS: " + ", ".join(self.problems))
        return "\n".join(lines)


def _more(items: Sequence) -> List[str]:
    n = len(items) - SHOWN_PROBLEMS
    return [f"    ... {n} more"] if n > 0 else []


def _load(dataset, idx: int) -> Tuple[str, Optional[str]]:
    """``("ok" | "size" | "unreadable", message)`` for image ``idx``."""
    try:
        dataset.load_image(idx)
    except DatasetError as e:  # decoded, but not of the stated size
        return "size", str(e)
    except (OSError, RuntimeError) as e:
        return "unreadable", str(e)
    return "ok", None


def check_dataset(dataset, workers: int = 4, progress: bool = False) -> DatasetReport:
    """Decodes every image of ``dataset`` and counts its boxes.

    Args:
        dataset: a ``COCODataset`` or ``VOCDataset`` (``load_image``, ``image_path``,
            ``get_annotations``, ``dropped``, ``source``), built with every image kept.
        workers: decoding threads (OpenCV releases the GIL while it decodes).
        progress: report progress (:func:`dcn_det.progress.progress`).

    Returns:
        the :class:`DatasetReport`.
    """
    report = DatasetReport(source=dataset.source, images=len(dataset))
    report.dropped = {r: sum(d.counts()[r] for d in dataset.dropped) for r in REASONS}
    report.per_class = {name: 0 for name in dataset.class_names}
    for idx in range(len(dataset)):
        ann = dataset.get_annotations(idx)
        labels, ignored = ann["labels"].tolist(), ann["difficult"].tolist()
        report.boxes += len(labels)
        report.ignored += sum(ignored)
        report.empty_images += not labels
        for label in labels:
            report.per_class[dataset.class_names[label]] += 1
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(lambda i: _load(dataset, i), range(len(dataset)))
        for idx, (kind, message) in enumerate(progress_of(results, "decoding", total=len(dataset),
                                                          enabled=progress)):
            if kind == "unreadable":
                report.unreadable.append((dataset.image_path(idx), message))
                continue
            report.decodable += 1
            if kind == "size":
                report.size_mismatches.append(message)
    return report


def dataset_for_check(kind: str, root: str, ann_file: str = "",
                      splits: Sequence[str] = ()):
    """The dataset to check, with every image and box kept and no transform.

    Args:
        kind: ``"coco"`` or ``"voc"`` (a ``data.*.type``; synthetic data has no files).
        root: COCO: the image folder; VOC: the VOCdevkit folder.
        ann_file: COCO instances JSON.
        splits: VOC ``"<year>/<image set>"`` entries.

    Raises:
        DatasetError / FileNotFoundError: the annotations cannot be read (names the entry).
    """
    if kind == "coco":
        if not ann_file:
            raise DatasetError("a COCO dataset needs its instances JSON (data.*.ann_file, --coco)")
        return COCODataset(ann_file, root)
    if kind == "voc":
        return VOCDataset(root, list(splits), keep_difficult=True, check_files=False)
    raise DatasetError(f"only COCO and VOC datasets on disk can be checked, got type {kind!r} "
                       "(synthetic data is generated in memory)")
