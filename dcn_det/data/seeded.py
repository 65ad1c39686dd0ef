"""Training batches whose content is a pure function of (seed, rank, iteration).

Random augmentation normally draws from the RNG of whichever worker process loads an item, so
a resumed run would see different flips than an uninterrupted one. Here every item of batch
``k`` is loaded under its own seed derived from ``(seed, rank, k, j)``, and a resumed run
replays the (cheap, index-only) batch stream and skips the first ``start_iter`` batches. The
same seed and config therefore give the same batches whether or not the run was interrupted,
with any number of workers.
"""
from typing import Iterable, Iterator, List, Tuple

import torch

_MASK = (1 << 63) - 1


def item_seed(seed: int, rank: int, batch: int, slot: int) -> int:
    """A 63-bit seed for slot ``slot`` of batch ``batch`` on ``rank`` (no Python ``hash``,
    which is salted per process)."""
    x = (seed * 0x9E3779B97F4A7C15 + rank * 0xBF58476D1CE4E5B9 + batch * 0x94D049BB133111EB
         + slot * 0x2545F4914F6CDD1D) & _MASK
    x ^= x >> 31
    return (x * 0xD6E8FEB86659FD93) & _MASK


class SeededBatches:
    """Wraps a batch sampler: skips ``start`` batches, tags each index with its seed.

    Args:
        batch_sampler: yields lists of dataset indices (infinite).
        seed, rank: the run's seed and this process's rank.
        start: batches to skip (the iteration a resumed run starts at).
    """

    def __init__(self, batch_sampler: Iterable[List[int]], seed: int, rank: int, start: int = 0):
        self.batch_sampler, self.seed, self.rank, self.start = batch_sampler, seed, rank, start

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        for k, batch in enumerate(self.batch_sampler):
            if k < self.start:
                continue
            yield [(idx, item_seed(self.seed, self.rank, k, j)) for j, idx in enumerate(batch)]


class SeededDataset:
    """``dataset[(index, seed)]`` = ``dataset[index]`` loaded with torch's RNG seeded by ``seed``.

    The global RNG state of the loading process is restored afterwards, so seeding here never
    leaks into the model's own randomness when ``num_workers == 0``.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
