"""Boxes that cannot be training targets, and the per-file count of those left out.

A dataset checks every box once, when it is built, against the image size its annotation
states (the decoded size must equal it, see ``base.check_image_size``), with the same
threshold as the clipping in the transforms, so that clipping finds nothing more to drop at
the image's own size (a box a few thousandths of a pixel wide can still vanish when the
image is scaled down). Each annotation file (COCO) or image set (VOC) with left-out boxes
gives one warning with the count per reason and a few of their ids.
"""
import math
import warnings
from typing import Dict, List, Optional

from .transforms import MIN_BOX_SIZE

# Why a box is left out; the order of the report.
REASONS = ("non-finite", "degenerate", "outside")
_DESCRIPTION = {
    "non-finite": "NaN/inf coordinates",
    "degenerate": "zero or negative width or height",
    "outside": "no area inside the image",
}
SHOWN_IDS = 5  # ids listed per reason in a warning


def box_problem(x1: float, y1: float, x2: float, y2: float, height: int,
                width: int) -> Optional[str]:
    """Why a box cannot be a target, or None when it can.

    Args:
        x1, y1, x2, y2: the box, XYXY in continuous pixels (pixel ``i`` covers ``[i, i+1)``).
        height, width: the image size in pixels.

    Returns:
        ``"non-finite"`` (a NaN or infinite coordinate), ``"degenerate"`` (width or height
        below ``MIN_BOX_SIZE``), ``"outside"`` (less than ``MIN_BOX_SIZE`` wide or high once
        clipped to ``[0, width] x [0, height]``), or None.
    """
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return "non-finite"
    if x2 - x1 < MIN_BOX_SIZE or y2 - y1 < MIN_BOX_SIZE:
        return "degenerate"
    if min(x2, width) - max(x1, 0.0) < MIN_BOX_SIZE or \
            min(y2, height) - max(y1, 0.0) < MIN_BOX_SIZE:
        return "outside"
    return None


class DroppedBoxes:
    """The boxes of one annotation source left out, by reason.

    Args:
        source: the annotation file or image set, as named in the warning.
        unit: what a box is called there (``"annotation"`` for COCO, ``"object"`` for VOC).

    Attributes:
        ids: reason -> ids of the boxes left out for it (COCO annotation ids, or
            ``"<image name> object <j>"`` for VOC, j counting the file's objects from 0),
            in file order.
        total: boxes seen, kept or not.
    """

    def __init__(self, source: str, unit: str):
        self.source, self.unit = source, unit
        self.ids: Dict[str, List] = {r: [] for r in REASONS}
        self.total = 0

    def check(self, entry_id, box, height: int, width: int) -> bool:
        """Counts one box; returns True when it is kept (``box`` XYXY px as in ``box_problem``)."""
        self.total += 1
        reason = box_problem(*box, height, width)
        if reason is not None:
            self.ids[reason].append(entry_id)
        return reason is None

    def counts(self) -> Dict[str, int]:
        """reason -> number of boxes left out for it."""
        return {r: len(v) for r, v in self.ids.items()}

    def __len__(self) -> int:
        return sum(len(v) for v in self.ids.values())

    def message(self) -> str:
        """One line: the source, the count of each reason and the first ids."""
        parts = []
        for reason, ids in self.ids.items():
            if ids:
                shown = ", ".join(str(i) for i in ids[:SHOWN_IDS])
                more = f", ... {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
                parts.append(f"{len(ids)} with {_DESCRIPTION[reason]} (ids {shown}{more})")
        return (f"{self.source}: ignored {len(self)} {self.unit}(s) of {self.total} whose box "
                f"cannot be a target: " + "; ".join(parts))

    def warn(self) -> None:
        """Issues the one warning of this source (nothing when no box was left out)."""
        if len(self):
            warnings.warn(self.message(), stacklevel=3)
