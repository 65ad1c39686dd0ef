"""Builders: each dataset type from a config section, train/test loaders with workers."""

import pytest
import torch

from dcn_det.data.build import build_dataset, build_test_loader, build_train_loader
from dcn_det.data.coco import COCODataset
from dcn_det.data.synthetic import SyntheticDataset, write_coco, write_voc
from dcn_det.data.voc import VOCDataset

from .conftest import data_cfg, dataset_cfg, synthetic_cfg


def test_build_synthetic_train_and_test():
    cfg = data_cfg(min_size_train=[64, 96], max_size_train=1000, flip_prob=0.5)
    train = build_dataset(cfg.train, cfg, is_train=True)
    test = build_dataset(cfg.test, cfg, is_train=False)
    assert isinstance(train, SyntheticDataset) and len(train) == 8 and train.split == "train"
    assert len(test) == 5 and test.split == "val"
    assert {train[0][0].shape[1] for _ in range(30)} == {64, 96}  # multi-scale short side
    image, t = test[0]
    assert image.shape[1] == 96 and t["orig_size"] == (96, 128)
    raw = test.get_annotations(0)
    assert torch.equal(t["boxes"], raw["boxes"])  # already at the test size: no resize


def test_build_coco_and_voc(tmp_path):
    syn = SyntheticDataset(4, seed=0, image_size=(96, 128))
    ann = write_coco(syn, str(tmp_path / "coco"))
    write_voc(syn, str(tmp_path / "voc"))
    coco_cfg = dataset_cfg(type="coco", root=str(tmp_path / "coco" / "train"), ann_file=ann)
    voc_cfg = dataset_cfg(type="voc", root=str(tmp_path / "voc"), splits=["2007/train"])
    cfg = data_cfg(min_size_test=48, max_size_test=1000)
    coco = build_dataset(coco_cfg, cfg, is_train=False)
    voc = build_dataset(voc_cfg, cfg, is_train=True)
    assert isinstance(coco, COCODataset) and isinstance(voc, VOCDataset)
    assert coco[0][0].shape == (3, 48, 64)
    torch.testing.assert_close(coco[0][1]["boxes"], syn.get_annotations(0)["boxes"] * 0.5)
    torch.testing.assert_close(voc[1][1]["boxes"], syn[1][1]["boxes"])


@pytest.mark.parametrize("ds, match", [
    (dataset_cfg(type="lvis"), "type must be one of"),
    (dataset_cfg(type="coco"), "ann_file"),
    (dataset_cfg(type="voc", root="x"), "splits"),
    (dataset_cfg(type="synthetic", root="some/dir"), "root must be ''"),
])
def test_bad_dataset_configs(ds, match):
    with pytest.raises(ValueError, match=match):
        build_dataset(ds, data_cfg(), is_train=True)


def test_train_loader_with_workers_yields_correct_batches():
    cfg = data_cfg(num_workers=2, images_per_batch=2)
    loader = build_train_loader(cfg, seed=0)
    reference = build_dataset(cfg.train, cfg, is_train=True)  # flip_prob = 0: deterministic
    seen = set()
    for _ in range(6):  # 12 images: more than one epoch of 8
        images, targets = next(loader)
        assert len(images) == len(targets) == 2
        for image, t in zip(images, targets):
            ref_image, ref_t = reference[t["image_id"] - 1]
            assert torch.equal(image, ref_image)
            assert torch.equal(t["boxes"], ref_t["boxes"]) and torch.equal(t["labels"], ref_t["labels"])
            seen.add(t["image_id"])
    assert seen == set(range(1, 9))
    assert isinstance(loader.dataset, SyntheticDataset)


def test_train_loader_is_reproducible_and_sharded():
    # Workers draw the augmentation from seeds derived from ``seed``: same seed, same batches.
    cfg = data_cfg(flip_prob=0.5, min_size_train=[64, 80, 96], num_workers=2)
    a, b = build_train_loader(cfg, seed=3), build_train_loader(cfg, seed=3)
    shapes = set()
    for _ in range(4):
        (ia, ta), (ib, tb) = next(a), next(b)
        assert all(torch.equal(x, y) for x, y in zip(ia, ib))
        assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(ta, tb))
        shapes |= {tuple(x.shape) for x in ia}
    assert len(shapes) > 1  # the random resize did act

    def ids(loader, n):
        return [t["image_id"] for _ in range(n) for t in next(loader)[1]]

    cfg0 = data_cfg()
    r0 = ids(build_train_loader(cfg0, 0, 2, seed=1), 2)
    r1 = ids(build_train_loader(cfg0, 1, 2, seed=1), 2)
    assert sorted(r0 + r1) == list(range(1, 9))  # one epoch split across two ranks


def test_train_loader_groups_by_aspect_ratio(tmp_path):
    syn = SyntheticDataset(10, seed=0, image_size=(64, 96), portrait_fraction=0.5)
    ann = write_coco(syn, str(tmp_path))
    cfg = data_cfg(train=dataset_cfg(type="coco", root=str(tmp_path / "train"), ann_file=ann),
                   min_size_train=[64], images_per_batch=2)
    loader = build_train_loader(cfg)
    for _ in range(8):
        images, _ = next(loader)
        assert len({img.shape[1] > img.shape[2] for img in images}) == 1


def test_train_loader_error_names_the_image_file(tmp_path):
    syn = SyntheticDataset(3, seed=0, image_size=(64, 96))
    ann = write_coco(syn, str(tmp_path))
    with open(tmp_path / "train" / "000002.png", "wb") as f:
        f.write(b"corrupt")
    cfg = data_cfg(train=dataset_cfg(type="coco", root=str(tmp_path / "train"), ann_file=ann),
                   num_workers=2, images_per_batch=1, aspect_ratio_grouping=False)
    loader = build_train_loader(cfg)
    try:
        with pytest.raises(RuntimeError, match=r"000002\.png"):
            for _ in range(10):
                next(loader)
    finally:
        loader.close()


@pytest.mark.parametrize("world_size", [1, 2])
def test_test_loader_covers_every_image_once(world_size):
    cfg = data_cfg(num_workers=2 if world_size == 1 else 0, test_images_per_batch=2,
                   test=dataset_cfg(synthetic=synthetic_cfg(split="val", num_images=5)))
    ids = []
    for rank in range(world_size):
        for images, targets in build_test_loader(cfg, rank, world_size):
            assert all(img.shape[1] == 96 for img in images)
            ids += [t["image_id"] for t in targets]
    assert sorted(ids) == [1, 2, 3, 4, 5]


def test_test_loader_does_not_flip():
    cfg = data_cfg(flip_prob=1.0)
    loader = build_test_loader(cfg)
    images, targets = next(iter(loader))
    ref_image, ref_t = SyntheticDataset(5, seed=0, image_size=(96, 128), max_objects=4, split="val")[0]
    assert torch.equal(images[0], ref_image) and torch.equal(targets[0]["boxes"], ref_t["boxes"])


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_loader_continues_the_same_batches(workers):
    """Batches from start_iter=3 equal batches 3.. of an uninterrupted loader, flips included,
    and loading does not disturb the caller's RNG."""
    cfg = data_cfg(flip_prob=0.5, num_workers=workers, min_size_train=(80, 96))
    full = build_train_loader(cfg, seed=5)
    torch.manual_seed(123)
    expected_rng = torch.rand(1)
    torch.manual_seed(123)
    batches = [next(full) for _ in range(6)]
    if workers == 0:
        assert torch.equal(torch.rand(1), expected_rng)
    full.close()
    resumed = build_train_loader(cfg, seed=5, start_iter=3)
    for want in batches[3:]:
        got = next(resumed)
        for a, b in zip(got[0], want[0]):
            assert torch.equal(a, b)
        for a, b in zip(got[1], want[1]):
            assert a["image_id"] == b["image_id"] and torch.equal(a["boxes"], b["boxes"])
    resumed.close()
    # the flips really vary (otherwise the test would prove nothing)
    other = build_train_loader(data_cfg(flip_prob=0.0, num_workers=0, min_size_train=(80, 96)),
                               seed=5)
    plain = [next(other) for _ in range(6)]
    assert any(not torch.equal(a, b) for p, q in zip(plain, batches) for a, b in zip(p[0], q[0]))
