"""Collecting evaluator state from every process onto rank 0."""
from typing import Any, List

import torch.distributed as dist


def is_distributed() -> bool:
    """True when ``torch.distributed`` is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """True on rank 0, and always when not running distributed."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def gather_objects(obj: Any) -> List[Any]:
    """Returns every rank's ``obj`` (in rank order) on all ranks; ``[obj]`` when not distributed.

    Uses ``all_gather_object`` (pickles through the default process group), which every rank
    must call, so call it from all ranks even if only rank 0 uses the result.
    """
    if not is_distributed():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
