"""The synthetic dataset: determinism, validity, and that it is a real detection problem.

Its generation speed is measured by benchmarks/synthetic.py, not asserted here."""
import numpy as np
import pytest
import torch

from dcn_det.data.synthetic import SHAPE_NAMES, SyntheticDataset, render_image


def _box_iou(a, b):
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def test_same_seed_same_items_in_any_order():
    a = SyntheticDataset(6, seed=7, image_size=(96, 128))
    b = SyntheticDataset(6, seed=7, image_size=(96, 128))
    for i in reversed(range(6)):  # b is visited in a different order
        ia, ta = a[5 - i]
        ib, tb = b[5 - i]
        assert torch.equal(ia, ib)
        assert torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])


def test_seed_split_and_index_change_the_image():
    base = SyntheticDataset(3, seed=0, image_size=(96, 128))
    other_seed = SyntheticDataset(3, seed=1, image_size=(96, 128))
    other_split = SyntheticDataset(3, seed=0, image_size=(96, 128), split="val")
    assert not torch.equal(base[0][0], other_seed[0][0])
    assert not torch.equal(base[0][0], other_split[0][0])
    assert not torch.equal(base[0][0], base[1][0])


def test_items_have_the_target_format():
    ds = SyntheticDataset(4, seed=0, image_size=(100, 140), num_classes=5)
    assert ds.class_names == list(SHAPE_NAMES[:5])
    for i in range(4):
        image, t = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 100, 140)
        assert t["boxes"].dtype == torch.float32 and t["boxes"].shape[1] == 4
        assert t["labels"].dtype == torch.int64 and len(t["labels"]) == len(t["boxes"]) >= 1
        assert t["difficult"].dtype == torch.bool and not t["difficult"].any()
        assert t["image_id"] == i + 1 and t["orig_size"] == (100, 140)
        b = t["boxes"]
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert (b[:, :2] >= 0).all() and (b[:, 2] <= 140).all() and (b[:, 3] <= 100).all()
        assert (t["labels"] >= 0).all() and (t["labels"] < 5).all()
        # Integer boxes: tight bounds of visible pixels in the continuous frame.
        assert torch.equal(b, b.round())


def test_boxes_are_tight_bounds_of_visible_pixels():
    """Each box is exactly the extent of its object's visible pixels; occluded ones are dropped."""
    dropped = 0
    for i in range(12):
        rng = np.random.default_rng([5, i])
        s = render_image(rng, 96, 128, 6, 3, 8, min_visible_fraction=0.25, return_owner=True)
        owner = s["owner"]
        for box, k, area in zip(s["boxes"], s["object_index"], s["areas"]):
            ys, xs = np.nonzero(owner == k)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert area == xs.size >= 0.25 * s["full_areas"][k]
        for k in set(range(len(s["full_areas"]))) - set(s["object_index"].tolist()):
            assert (owner == k).sum() < 0.25 * s["full_areas"][k]
            dropped += 1
        # The last object drawn is never occluded, so no image is empty.
        assert len(s["full_areas"]) - 1 in s["object_index"].tolist()
    assert dropped > 0  # occlusion does happen with 3-8 objects in a small image


def test_dataset_matches_render_image():
    ds = SyntheticDataset(2, seed=1, image_size=(64, 80), split="x")
    s = ds.generate(1)
    image, t = ds[1]
    assert np.array_equal(image.permute(1, 2, 0).numpy(), s["image"])
    assert t["boxes"].tolist() == s["boxes"].tolist()


def test_is_a_real_detection_problem():
    ds = SyntheticDataset(60, seed=0, image_size=(256, 320), num_classes=6)
    labels, sizes, overlapping, multi = [], [], 0, 0
    for i in range(len(ds)):
        s = ds.generate(i)
        labels += s["labels"].tolist()
        b = s["boxes"]
        sizes += np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).tolist()
        multi += len(b) > 1
        if len(b) > 1:
            iou = _box_iou(b, b)
            overlapping += bool((iou[np.triu_indices(len(b), 1)] > 0.05).any())
    counts = np.bincount(labels, minlength=6)
    assert (counts >= 10).all(), counts  # every class occurs, none dominates everything
    sizes = np.array(sizes)
    assert (sizes < 32).sum() >= 10 and (sizes > 96).sum() >= 10  # COCO "small" and "large"
    assert multi >= 30 and overlapping >= 10


def test_colour_does_not_define_the_class():
    """Object colours vary within each class about as much as they could at all."""
    colours = {}
    for i in range(30):
        s = render_image(np.random.default_rng([8, i]), 96, 128, 6, 1, 4, return_owner=True)
        for k, label in zip(s["object_index"], s["labels"]):
            colours.setdefault(int(label), []).append(s["image"][s["owner"] == k].mean(0))
    spreads = [np.std(np.stack(c), 0).mean() for c in colours.values()]
    assert len(spreads) == 6 and min(spreads) > 40  # uniform colours in 0..255 give ~70


def test_portrait_fraction_and_image_hw():
    ds = SyntheticDataset(20, seed=0, image_size=(96, 128), portrait_fraction=0.5)
    hws = [ds.image_hw(i) for i in range(20)]
    assert set(hws) == {(96, 128), (128, 96)}
    for i in (0, 1, 2, 3):
        assert tuple(ds[i][0].shape[1:]) == hws[i]


def _box_sizes(ds):
    sizes = []
    for i in range(len(ds)):
        b = ds.generate(i)["boxes"]
        sizes += np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).tolist()
    return np.array(sizes)


def test_object_size_bounds():
    default = _box_sizes(SyntheticDataset(40, seed=3, image_size=(128, 160), max_objects=1))
    big = _box_sizes(SyntheticDataset(40, seed=3, image_size=(128, 160), max_objects=1,
                                      min_object_size=48, max_object_fraction=0.6))
    # Visible boxes can be smaller than the drawn size (aspect ratio, image border, strokes),
    # so compare the distributions: the default reaches down to ~12 px, the bounded one does not.
    assert np.percentile(default, 10) < 20
    assert np.percentile(big, 10) > 28 and np.median(big) > np.median(default)
    assert big.max() <= 1.3 * 0.6 * 128  # a warped, sheared object overshoots its size a little


def _solidity(mask: np.ndarray) -> float:
    import cv2
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    hull = cv2.convexHull(max(contours, key=cv2.contourArea))
    return mask.sum() / max(cv2.contourArea(hull), 1.0)


def test_distortion_zero_keeps_squares_convex():
    solidity = {}
    for distortion in (0.0, 1.0):
        values = []
        for i in range(40):
            s = render_image(np.random.default_rng([11, i]), 160, 160, 2, 1, 1, return_owner=True,
                             min_object_size=60, max_object_fraction=0.5, distortion=distortion)
            if len(s["labels"]) and s["labels"][0] == 1:  # a single square
                mask = s["owner"] == s["object_index"][0]
                ys, xs = np.nonzero(mask)
                if xs.min() > 0 and ys.min() > 0 and xs.max() < 159 and ys.max() < 159:
                    values.append(_solidity(mask))  # not cut by the border
        solidity[distortion] = np.array(values)
    assert len(solidity[0.0]) >= 5 and len(solidity[1.0]) >= 5
    assert solidity[0.0].min() > 0.97  # an undistorted square is a parallelogram
    assert solidity[1.0].min() < 0.95  # bends and warps make some concave


def test_clutter_zero_gives_smooth_backgrounds_without_strokes():
    def rough_share(clutter):
        shares = []
        for i in range(12):
            s = render_image(np.random.default_rng([12, i]), 96, 128, 4, 1, 2, return_owner=True,
                             clutter=clutter)
            img = s["image"].astype(np.int32)
            bg = (s["owner"][:, 1:] < 0) & (s["owner"][:, :-1] < 0)
            diff = np.abs(np.diff(img, axis=1)).max(-1)
            # The per-pixel noise is +-10, so a smooth gradient never steps by more than ~21.
            shares.append((diff[bg] > 22).mean())
        return np.array(shares)
    assert rough_share(0.0).max() == 0.0
    assert rough_share(1.0).max() > 0.01  # stripes, blocks and strokes


@pytest.mark.parametrize("kwargs, match", [
    (dict(distortion=1.5), "distortion"),
    (dict(clutter=-0.1), "clutter"),
    (dict(min_object_size=0), "min_object_size"),
    (dict(min_object_size=300), "min_object_size"),
    (dict(max_object_fraction=1.5), "max_object_fraction"),
    (dict(num_classes=7), "num_classes"),
    (dict(num_classes=0), "num_classes"),
    (dict(image_size=(10, 128)), "image_size"),
    (dict(min_objects=3, max_objects=2), "min_objects"),
    (dict(num_images=-1), "num_images"),
])
def test_bad_arguments(kwargs, match):
    args = dict(num_images=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SyntheticDataset(**args)


def test_index_out_of_range():
    with pytest.raises(IndexError, match="out of range"):
        SyntheticDataset(3)[3]
