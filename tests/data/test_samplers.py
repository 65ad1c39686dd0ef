"""Samplers: infinite seeded sharded training stream, exact inference coverage, aspect grouping."""
import itertools

import pytest

from dcn_det.data.samplers import (AspectRatioGroupedBatchSampler, InferenceSampler,
                                   TrainingSampler, aspect_ratio_group_ids)


def _take(it, n):
    return list(itertools.islice(iter(it), n))


def test_training_sampler_epochs_are_permutations_and_differ():
    s = _take(TrainingSampler(10, seed=3), 30)
    epochs = [s[0:10], s[10:20], s[20:30]]
    assert all(sorted(e) == list(range(10)) for e in epochs)
    assert epochs[0] != epochs[1]


def test_training_sampler_is_deterministic_and_seeded():
    assert _take(TrainingSampler(50, seed=1), 120) == _take(TrainingSampler(50, seed=1), 120)
    assert _take(TrainingSampler(50, seed=1), 50) != _take(TrainingSampler(50, seed=2), 50)
    assert _take(TrainingSampler(5, shuffle=False), 12) == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]


@pytest.mark.parametrize("world_size", [2, 3])
def test_training_sampler_shards_partition_the_stream(world_size):
    full = _take(TrainingSampler(12, seed=5), 12 * world_size)
    shards = [_take(TrainingSampler(12, seed=5, rank=r, world_size=world_size), 12)
              for r in range(world_size)]
    # Interleaving the shards rebuilds the single-process stream: no overlap, nothing lost.
    assert [shards[i % world_size][i // world_size] for i in range(12 * world_size)] == full
    first_epoch = [i for r in range(world_size) for i in shards[r][: 12 // world_size]]
    assert sorted(first_epoch) == list(range(12))


@pytest.mark.parametrize("size", [0, 1, 7, 10])
@pytest.mark.parametrize("world_size", [1, 3, 4])
def test_inference_sampler_covers_every_index_once(size, world_size):
    parts = [list(InferenceSampler(size, r, world_size)) for r in range(world_size)]
    assert sum(parts, []) == list(range(size))
    lengths = [len(InferenceSampler(size, r, world_size)) for r in range(world_size)]
    assert lengths == [len(p) for p in parts] and max(lengths) - min(lengths) <= 1


@pytest.mark.parametrize("make, match", [
    (lambda: TrainingSampler(0), "size"),
    (lambda: TrainingSampler(5, rank=2, world_size=2), "rank"),
    (lambda: InferenceSampler(5, rank=0, world_size=0), "world_size"),
    (lambda: AspectRatioGroupedBatchSampler([], [], 0), "batch_size"),
])
def test_bad_sampler_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


class _Sizes:
    def __init__(self, hws):
        self.hws = hws

    def __len__(self):
        return len(self.hws)

    def image_hw(self, i):
        return self.hws[i]


def test_aspect_grouping_batches_one_orientation():
    hws = [(10, 20), (20, 10), (10, 10), (30, 5), (5, 30), (8, 9), (9, 8), (40, 41)]
    groups = aspect_ratio_group_ids(_Sizes(hws))
    assert groups == [0, 1, 0, 1, 0, 0, 1, 0]
    sampler = AspectRatioGroupedBatchSampler(TrainingSampler(8, seed=0), groups, batch_size=2)
    batches = _take(sampler, 40)
    assert all(len(b) == 2 and groups[b[0]] == groups[b[1]] for b in batches)
    assert {i for b in batches for i in b} == set(range(8))
    # Order within a group follows the underlying stream.
    stream = _take(TrainingSampler(8, seed=0), 80)
    landscape = [i for i in stream if groups[i] == 0]
    got = [i for b in batches if groups[b[0]] == 0 for i in b]
    assert got == landscape[: len(got)]
