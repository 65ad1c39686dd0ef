"""Index samplers for training (infinite, sharded) and inference (each index exactly once).

Distributed training shards one global stream: rank ``r`` of ``W`` takes every ``W``-th index
starting at ``r`` of a stream that every rank generates identically from the shared seed, so
ranks never need to communicate and together see every image once per epoch.
"""
import itertools
from typing import Iterator, List, Sequence

import torch
from torch.utils.data import Sampler


def _check_rank(rank: int, world_size: int) -> None:
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, world_size={world_size}), got {rank!r}")


class TrainingSampler(Sampler):
    """Infinite stream of dataset indices: a new seeded permutation every epoch, sharded.

    Args:
        size: dataset length (> 0).
        shuffle: permute each epoch (False = 0, 1, ..., size-1 repeated).
        seed: shared by all ranks; the stream is a function of ``(seed, size)`` only.
        rank, world_size: this process's shard.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f"size (dataset length) must be an int > 0, got {size!r}")
        _check_rank(rank, world_size)
        self.size, self.shuffle, self.seed = size, shuffle, int(seed)
        self.rank, self.world_size = rank, world_size

    def _global_stream(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed)
        while True:
            if self.shuffle:
                yield from torch.randperm(self.size, generator=g).tolist()
            else:
                yield from range(self.size)

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(self._global_stream(), self.rank, None, self.world_size)


class InferenceSampler(Sampler):
    """Splits ``range(size)`` into ``world_size`` contiguous, nearly equal, disjoint shards.

    Shard sizes differ by at most one; the union over ranks is every index exactly once, in
    order, so gathered results need no de-duplication.
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"size (dataset length) must be an int >= 0, got {size!r}")
        _check_rank(rank, world_size)
        per, extra = divmod(size, world_size)
        start = rank * per + min(rank, extra)
        self.indices = range(start, start + per + (1 if rank < extra else 0))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class AspectRatioGroupedBatchSampler(Sampler):
    """Batches indices so that a batch holds only landscape or only portrait images.

    Images of one orientation pad to a similar shape, which saves memory and compute.
    Indices are buffered per group and a batch is emitted when its group fills up, so the
    order within the stream is preserved within each group.

    Args:
        sampler: an iterable of indices (typically the infinite ``TrainingSampler``).
        group_ids: ``group_ids[index]`` in ``{0, 1}``: 0 = landscape or square (w >= h),
            1 = portrait; see ``aspect_ratio_group_ids``.
        batch_size: images per batch.
    """

    def __init__(self, sampler, group_ids: Sequence[int], batch_size: int):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.sampler, self.group_ids, self.batch_size = sampler, list(group_ids), batch_size

    def __iter__(self) -> Iterator[List[int]]:
        buckets = {}
        for idx in self.sampler:
            bucket = buckets.setdefault(self.group_ids[idx], [])
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                del bucket[:]


def aspect_ratio_group_ids(dataset) -> List[int]:
    """0 for images with ``w >= h``, 1 for portrait ones, from ``dataset.image_hw(i)``."""
    ids = []
    for i in range(len(dataset)):
        h, w = dataset.image_hw(i)
        ids.append(0 if w >= h else 1)
    return ids
