"""Effective dilation over a dataset split, per deformable layer and object size (Table 2).

Every output location of every deformable layer, in every image, is one sample: its
effective dilation (:mod:`dcn_det.analysis.dilation`, averaged over the offset groups unless
one group is chosen) goes to the bucket of :mod:`dcn_det.analysis.buckets` of the location's
centre. Output pixel ``(i, j)`` of a layer at output stride ``s`` is input-image pixel
``(i*s, j*s)``, whose centre is the continuous point ``(j*s + 0.5, i*s + 0.5)`` in the frame of
the dataset's boxes (resized image). Locations in the batch padding (beyond the resized image)
are not counted. Sums and sums of squares are accumulated in float64; the std is the
population std over locations.
"""
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader

from dcn_det.analysis.buckets import (BUCKETS, DEFAULT_AREA_THRESHOLDS, assign_buckets,
                                      check_area_thresholds)
from dcn_det.analysis.capture import DeformLayerRecord, OffsetCapture
from dcn_det.analysis.dilation import effective_dilation
from dcn_det.progress import progress as progress_of
from dcn_det.structures import box_area


@dataclass
class DilationTable:
    """Per-layer, per-bucket statistics of the effective dilation.

    Attributes:
        layers: deformable layer names in forward order (rows).
        nominal_dilation: ``{layer: (dil_h, dil_w)}`` of each layer's conv.
        count, total, total_sq: ``(len(layers), 4)`` float64 tensors: number of locations,
            sum and sum of squares of their effective dilation, columns in :data:`BUCKETS`
            order (small, medium, large, background).
        area_thresholds: ``(t_small, t_large)`` in original-image pixels.
        num_images: images measured.
        group: ``"mean"`` (per location, the mean over offset groups) or the group index.
    """

    layers: List[str]
    nominal_dilation: Dict[str, Tuple[int, int]]
    count: torch.Tensor
    total: torch.Tensor
    total_sq: torch.Tensor
    area_thresholds: Tuple[float, float] = DEFAULT_AREA_THRESHOLDS
    num_images: int = 0
    group: Any = "mean"
    buckets: Tuple[str, ...] = field(default=BUCKETS)

    def mean(self) -> torch.Tensor:
        """``(L, 4)`` mean effective dilation in input-map pixels; NaN where count is 0."""
        return torch.where(self.count > 0, self.total / self.count.clamp(min=1),
                           torch.full_like(self.total, float("nan")))

    def std(self) -> torch.Tensor:
        """``(L, 4)`` population std over locations; NaN where count is 0."""
        mean = self.mean()
        var = (self.total_sq / self.count.clamp(min=1) - mean ** 2).clamp(min=0)
        return torch.where(self.count > 0, var.sqrt(), torch.full_like(var, float("nan")))

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict; empty buckets have ``mean``/``std`` null and ``count`` 0."""
        mean, std = self.mean(), self.std()

        def num(v: float) -> Optional[float]:
            return None if math.isnan(v) else round(float(v), 6)

        stats = {
            layer: {b: {"mean": num(mean[i, j]), "std": num(std[i, j]),
                        "count": int(self.count[i, j])} for j, b in enumerate(self.buckets)}
            for i, layer in enumerate(self.layers)}
        return {"metric": "effective dilation: mean distance between adjacent sampling "
                          "locations of a filter, in pixels of the layer's input map",
                "buckets": list(self.buckets), "area_thresholds": list(self.area_thresholds),
                "num_images": self.num_images, "offset_group": self.group,
                "layers": list(self.layers),
                "nominal_dilation": {k: list(v) for k, v in self.nominal_dilation.items()},
                "stats": stats}


class DilationAccumulator:
    """Adds the effective dilation of recorded batches into per-layer, per-bucket sums.

    Args:
        area_thresholds: ``(t_small, t_large)`` in original-image pixels.
        group: ``None`` = mean over offset groups per location, or one group index.
    """

    def __init__(self, *, area_thresholds: Sequence[float] = DEFAULT_AREA_THRESHOLDS,
                 group: Optional[int] = None):
        self.area_thresholds = check_area_thresholds(area_thresholds)
        self.group = group
        self.layers: List[str] = []
        self.nominal: Dict[str, Tuple[int, int]] = {}
        self._sums: Dict[str, torch.Tensor] = {}  # layer -> (3, 4) count, sum, sum of squares
        self.num_images = 0

    def add(self, records: Sequence[DeformLayerRecord], image_sizes: Sequence[Tuple[int, int]],
            targets: Sequence[Dict[str, Any]]) -> None:
        """Adds one batch.

        Args:
            records: every deformable layer of the batch's forward pass.
            image_sizes: per image ``(h, w)`` of the resized, unpadded image.
            targets: per image ``{"boxes": (M, 4) XYXY px of the resized image,
                "orig_size": (H, W) optional}`` (dataset targets).
        """
        if len(image_sizes) != len(targets):
            raise ValueError(f"image_sizes and targets must have one entry per image, got "
                             f"{len(image_sizes)} and {len(targets)}")
        for rec in records:
            if rec.name not in self._sums:
                self.layers.append(rec.name)
                self.nominal[rec.name] = tuple(rec.dilation)
                self._sums[rec.name] = torch.zeros(3, len(BUCKETS), dtype=torch.float64)
        # (N, H_out, W_out) per layer: the mean over the offset groups (or the one group)
        eds = [effective_dilation(rec, group=self.group).mean(1) for rec in records]
        for n, ((h, w), target) in enumerate(zip(image_sizes, targets)):
            boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
            oh, ow = target.get("orig_size", (h, w))
            areas = box_area(boxes).double() * (float(oh) / h) * (float(ow) / w)
            for rec, ed_all in zip(records, eds):
                ed = ed_all[n]
                s = rec.output_stride
                ho, wo = ed.shape
                ii, jj = torch.meshgrid(torch.arange(ho), torch.arange(wo), indexing="ij")
                valid = (ii * s < h) & (jj * s < w)  # not in the batch padding
                centres = torch.stack((jj[valid] * s + 0.5, ii[valid] * s + 0.5), -1)
                bucket = assign_buckets(centres, boxes, areas, self.area_thresholds)
                vals = ed[valid].double()
                sums = self._sums[rec.name]
                sums[0] += torch.bincount(bucket, minlength=len(BUCKETS)).double()
                sums[1] += torch.bincount(bucket, weights=vals, minlength=len(BUCKETS))
                sums[2] += torch.bincount(bucket, weights=vals * vals, minlength=len(BUCKETS))
            self.num_images += 1

    def table(self) -> DilationTable:
        """The statistics so far."""
        stacked = (torch.stack([self._sums[n] for n in self.layers], 1) if self.layers
                   else torch.zeros(3, 0, len(BUCKETS), dtype=torch.float64))
        return DilationTable(layers=list(self.layers), nominal_dilation=dict(self.nominal),
                             count=stacked[0], total=stacked[1], total_sq=stacked[2],
                             area_thresholds=self.area_thresholds, num_images=self.num_images,
                             group="mean" if self.group is None else self.group)


def _batches(data, max_images: int):
    """``(images, targets)`` batches from a DataLoader or a dataset, ``max_images`` at most."""
    if isinstance(data, DataLoader):
        seen = 0
        for images, targets in data:
            take = min(len(images), max_images - seen)
            if take <= 0:
                return
            yield list(images[:take]), list(targets[:take])
            seen += take
    elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        for i in range(min(len(data), max_images)):
            image, target = data[i]
            yield [image], [target]
    else:
        raise ValueError(f"data must be a DataLoader of (images, targets) batches or a dataset "
                         f"of (image, target) items, got {type(data).__name__}")


@torch.no_grad()
def effective_dilation_table(model: torch.nn.Module, data, *, max_images: int = 100,
                             area_thresholds: Sequence[float] = DEFAULT_AREA_THRESHOLDS,
                             group: Optional[int] = None, progress: bool = False
                             ) -> DilationTable:
    """Runs a detector's backbone over a split and tabulates its effective dilations.

    Only ``model.preprocess`` and ``model.backbone`` run (the offsets are all in the
    backbone), in eval mode; the model's mode is restored afterwards.

    Args:
        model: a ``TwoStageDetector`` (anything with ``preprocess`` and ``backbone``) with at
            least one deformable conv.
        data: a test DataLoader (``dcn_det.data.build.build_test_loader``) or a dataset whose
            items are ``(uint8 image (3, h, w), target)`` with boxes in the resized frame.
        max_images: images to measure at most (the first ones).
        area_thresholds: ``(t_small, t_large)`` in original-image pixels.
        group: ``None`` = per location, the mean over offset groups; or one group index.
        progress: report progress (:func:`dcn_det.progress.progress`).

    Returns:
        A :class:`DilationTable`.

    Raises:
        ValueError: bad arguments, or a model without deformable convs.
    """
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise ValueError(f"max_images must be a positive int, got {max_images!r}")
    if not hasattr(model, "preprocess") or not hasattr(model, "backbone"):
        raise ValueError(f"model must be a detector with preprocess() and backbone, got "
                         f"{type(model).__name__}")
    acc = DilationAccumulator(area_thresholds=area_thresholds, group=group)
    was_training = model.training
    model.eval()
    try:
        with OffsetCapture(model.backbone) as cap:
            for images, targets in progress_of(_batches(data, max_images),
                                               "effective dilation (batches)", enabled=progress):
                batch = model.preprocess(images)
                model.backbone(batch.tensor)
                acc.add(cap.ordered_records(), batch.image_sizes, targets)
    finally:
        model.train(was_training)
    return acc.table()


def format_dilation_table(table: DilationTable) -> str:
    """The table as text: rows = layers, columns = buckets, cells ``"mean ± std (count)"``.

    Values are in pixels of each layer's input map; ``dil`` is the conv's own dilation (what
    the effective dilation equals with zero offsets).
    """
    mean, std = table.mean(), table.std()
    cells = [[("-" if table.count[i, j] == 0 else
               f"{mean[i, j]:.2f} ± {std[i, j]:.2f} ({int(table.count[i, j])})")
              for j in range(len(table.buckets))] for i in range(len(table.layers))]
    name_w = max([len("layer")] + [len(n) for n in table.layers])
    col_w = max([len(b) for b in table.buckets] + [len(c) for row in cells for c in row])
    t_small, t_large = table.area_thresholds
    lines = [f"effective dilation (input-map pixels) over {table.num_images} images; "
             f"offset group: {table.group}; small < {t_small:g} <= medium < {t_large:g} <= large "
             "(box area, original px)",
             f"{'layer':<{name_w}}  {'dil':>5}  " + "  ".join(f"{b:>{col_w}}"
                                                          for b in table.buckets)]
    for i, layer in enumerate(table.layers):
        dh, dw = table.nominal_dilation[layer]
        dil = f"{dh}" if dh == dw else f"{dh}x{dw}"
        lines.append(f"{layer:<{name_w}}  {dil:>5}  " + "  ".join(f"{c:>{col_w}}"
                                                                for c in cells[i]))
    return "\n".join(lines)


def write_dilation_json(table: DilationTable, path: str) -> str:
    """Writes ``table.to_dict()`` as JSON atomically (tmp file + ``os.replace``); returns path."""
    from dcn_det.io.atomic import write_json

    return write_json(path, table.to_dict())


def plot_dilation_table(table: DilationTable, path: str) -> str:
    """Draws the table as a grouped bar chart (groups = layers, bars = buckets, error bars =
    std) into the PNG ``path`` via :func:`dcn_det.plots.grouped_bar_chart`; returns path."""
    from dcn_det.plots import grouped_bar_chart

    mean, std = table.mean(), table.std()
    return grouped_bar_chart(
        path, groups=list(table.layers), series=list(table.buckets),
        means=mean.t().tolist(), stds=std.t().tolist(),
        title=f"Effective dilation ({table.num_images} images)",
        ylabel="input-map pixels")


def across_tables(tables: Sequence[DilationTable]) -> Dict[str, Any]:
    """Per layer and bucket, the mean and sample std (ddof 1) over tables of each table's mean.

    For models trained with different seeds this is the seed-to-seed spread of the effective
    dilation, which :meth:`DilationTable.std` (the spread over locations of one model) is not.

    Args:
        tables: two or more tables of the same layers (e.g. one per seed).

    Returns:
        ``{"layers", "buckets", "num_tables", "stats": {layer: {bucket: {"mean", "std",
        "n"}}}}``; a bucket empty in some table averages the others (``n`` says how many).

    Raises:
        ValueError: fewer than two tables, or tables of different layers.
    """
    if len(tables) < 2:
        raise ValueError(f"across_tables needs at least two tables, got {len(tables)}")
    layers = list(tables[0].layers)
    if any(list(t.layers) != layers for t in tables):
        raise ValueError("the tables measure different layers: "
                         + "; ".join(str(list(t.layers)) for t in tables))
    means = torch.stack([t.mean() for t in tables])  # (T, L, 4), NaN = empty bucket
    stats = {}
    for i, layer in enumerate(layers):
        stats[layer] = {}
        for j, bucket in enumerate(tables[0].buckets):
            vals = [float(v) for v in means[:, i, j] if not math.isnan(float(v))]
            n = len(vals)
            mean = sum(vals) / n if n else None
            std = (math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else None)
            stats[layer][bucket] = {"mean": mean, "std": std, "n": n}
    return {"layers": layers, "buckets": list(tables[0].buckets), "num_tables": len(tables),
            "stats": stats}


def format_across_tables(summary: Dict[str, Any]) -> str:
    """``across_tables`` as text: rows = layers, cells ``"mean ± std over tables"``."""
    cells = [[("-" if s["n"] == 0 else f"{s['mean']:.2f}"
               + (f" ± {s['std']:.2f}" if s["std"] is not None else ""))
              for s in (summary["stats"][layer][b] for b in summary["buckets"])]
             for layer in summary["layers"]]
    name_w = max([len("layer")] + [len(n) for n in summary["layers"]])
    col_w = max([len(b) for b in summary["buckets"]] + [len(c) for row in cells for c in row])
    lines = [f"effective dilation, mean ± std over {summary['num_tables']} models (each "
             "model's mean over locations)",
             f"{'layer':<{name_w}}  " + "  ".join(f"{b:>{col_w}}" for b in summary["buckets"])]
    lines += [f"{layer:<{name_w}}  " + "  ".join(f"{c:>{col_w}}" for c in row)
              for layer, row in zip(summary["layers"], cells)]
    return "\n".join(lines)


def plot_across_tables(summary: Dict[str, Any], path: str) -> str:
    """Draws :func:`across_tables` as a grouped bar chart (groups = layers, bars = buckets,
    error bars = the spread over models) into the PNG ``path``; returns path."""
    from dcn_det.plots import grouped_bar_chart

    def val(layer, bucket, key):
        v = summary["stats"][layer][bucket][key]
        return math.nan if v is None else v

    return grouped_bar_chart(
        path, groups=list(summary["layers"]), series=list(summary["buckets"]),
        means=[[val(la, b, "mean") for la in summary["layers"]] for b in summary["buckets"]],
        stds=[[val(la, b, "std") for la in summary["layers"]] for b in summary["buckets"]],
        title=f"Effective dilation, mean +- std over {summary['num_tables']} models",
        ylabel="input-map pixels")
