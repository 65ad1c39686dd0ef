"""Class layouts of detector heads: moving the background from first (MXNet, Caffe) to last.

The official Deformable ConvNets heads put the background at class index 0; dcn_det's heads
put it last (index K, DESIGN 7). A class-indexed output is a stack of equal blocks of rows,
one per class (a row of ``cls_score``, ``G*G`` channels of ``rfcn_cls``, ``2*G*G`` of the
R-FCN class offsets, ``4*G*G`` of a box slot of ``rfcn_bbox``, 4 rows of a box slot of
``bbox_pred``), so the conversion moves the first block to the end; every other value keeps
its place. Box slots follow the same rule: an official class-agnostic box head has two slots,
(background, foreground); dcn_det's R-FCN keeps both as (foreground, background), its Faster
R-CNN head only the foreground one.
"""
import torch

from dcn_det.weights.source import WeightsError

# The official target normalisation (``TRAIN.BBOX_STDS``; means 0): the ``*_test`` copies of the
# box regressors that the official training writes beside the trained ones are multiplied by it.
OFFICIAL_BBOX_STDS = (0.1, 0.1, 0.2, 0.2)


def _blocks(tensor: torch.Tensor, block: int, name: str, path: str) -> int:
    rows = tensor.shape[0]
    if block <= 0 or rows % block:
        raise WeightsError(f"weights file {path!r}: {name} has {rows} output rows, not a "
                           f"multiple of the {block} rows of one class block; its layout "
                           f"cannot be mapped")
    return rows // block


def background_last(tensor: torch.Tensor, block: int, name: str, path: str) -> torch.Tensor:
    """Moves the first ``block`` rows (class 0 = background) after the others.

    Args:
        tensor: ``(n * block, ...)`` weight or ``(n * block,)`` bias, classes in blocks.
        block: rows per class.
        name: the file's key, for the error message.

    Raises:
        WeightsError: the rows are not a whole number of blocks.
    """
    _blocks(tensor, block, name, path)
    return torch.cat((tensor[block:], tensor[:block])).contiguous()


def drop_background(tensor: torch.Tensor, block: int, name: str, path: str) -> torch.Tensor:
    """Leaves out the first ``block`` rows (the untrained background box slot)."""
    if _blocks(tensor, block, name, path) < 2:
        raise WeightsError(f"weights file {path!r}: {name} has a single box slot; there is no "
                           f"foreground slot to keep")
    return tensor[block:].contiguous()


def undo_bbox_stds(tensor: torch.Tensor, rows_per_coord: int, name: str,
                   path: str) -> torch.Tensor:
    """The trained box regressor from its official ``*_test`` copy (divided by the stds).

    The official checkpoint callback writes ``W_test = W * std[coord]`` (and ``b * std +
    mean`` with mean 0), where output row ``r`` regresses coordinate ``(r // rows_per_coord) %
    4`` (1 for ``bbox_pred``, ``G*G`` for the position-sensitive ``rfcn_bbox``).
    """
    rows = tensor.shape[0]
    if rows % (4 * rows_per_coord):
        raise WeightsError(f"weights file {path!r}: {name} has {rows} rows, not a multiple of "
                           f"4 x {rows_per_coord}; its layout cannot be mapped")
    coord = (torch.arange(rows) // rows_per_coord) % 4
    stds = torch.tensor(OFFICIAL_BBOX_STDS, dtype=tensor.dtype)[coord]
    return (tensor / stds.view(-1, *([1] * (tensor.dim() - 1)))).contiguous()
