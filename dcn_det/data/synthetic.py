"""A seeded synthetic detection dataset: deformed geometric shapes on textured backgrounds.

The class of an object is its shape (disc, square, triangle, cross, ring, star); colour,
size, aspect ratio, shear, rotation and a smooth non-rigid warp are random, so a detector has
to learn shape. Objects range from ~12 px to most of the image, overlap and occlude each
other, and sit on noise / gradient / stripe backgrounds with distractor strokes. Every image
is generated from its own ``np.random.Generator`` seeded by ``(seed, split, index)``, so any
item can be produced alone, in any process, and is identical every time.

Boxes are the tight bounds of each object's *visible* pixels, in the continuous pixel frame
(pixel column ``i`` covers ``[i, i+1)``), so a box is ``[x0, y0, x1 + 1, y1 + 1]`` for the
first/last visible columns ``x0, x1`` and rows ``y0, y1``. Objects with less than
``min_visible_fraction`` of their in-image area visible are not annotated (they remain in the
picture as clutter): a sliver of a shape does not show its class.
"""
import zlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .base import finish_item, make_target
from .synthetic_export import write_coco, write_voc  # noqa: F401 - public API lives here too

SHAPE_NAMES = ("disc", "square", "triangle", "cross", "ring", "star")
RING_HOLE = 0.55        # inner / outer radius of a ring
_POINTS = 64            # vertices per canonical outline, so warps bend the edges smoothly
_SHIFT = 4              # cv2.fillPoly sub-pixel bits
MIN_OBJECT_SIZE = 12.0    # px, default size of the smallest object (before aspect/warp)
MAX_OBJECT_FRACTION = 0.85  # default size of the largest object, as a share of the short side


def _densify(poly: np.ndarray, n: int = _POINTS) -> np.ndarray:
    """Resamples a closed polygon ``(V, 2)`` to ``n`` points evenly spaced along its outline."""
    closed = np.concatenate([poly, poly[:1]], 0)
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, cum[-1], n, endpoint=False)
    return np.stack([np.interp(t, cum, closed[:, 0]), np.interp(t, cum, closed[:, 1])], 1)


def _regular(k: int, radii: Sequence[float], phase: float = -np.pi / 2) -> np.ndarray:
    ang = phase + np.arange(k * len(radii)) * (2 * np.pi / (k * len(radii)))
    r = np.tile(np.asarray(radii, dtype=np.float64), k)
    return np.stack([r * np.cos(ang), r * np.sin(ang)], 1)


def _canonical_shapes() -> Dict[str, List[np.ndarray]]:
    """Outlines in unit coordinates (about ``[-1, 1]^2``); a second outline is a hole."""
    circle = _regular(_POINTS, [1.0])
    cross = np.array([[-0.33, -1], [0.33, -1], [0.33, -0.33], [1, -0.33], [1, 0.33], [0.33, 0.33],
                      [0.33, 1], [-0.33, 1], [-0.33, 0.33], [-1, 0.33], [-1, -0.33], [-0.33, -0.33]])
    tri = _regular(3, [1.0])
    tri[:, 1] += 0.25  # centre the triangle's bounding box
    return {
        "disc": [circle],
        "square": [_densify(np.array([[-1.0, -1], [1, -1], [1, 1], [-1, 1]]))],
        "triangle": [_densify(tri * 1.15)],
        "cross": [_densify(cross)],
        "ring": [circle, circle * RING_HOLE],
        "star": [_densify(_regular(5, [1.0, 0.42]))],
    }


_SHAPES = _canonical_shapes()


def _deform(pts: np.ndarray, p: Dict) -> np.ndarray:
    """Smooth warp, shear, anisotropic scale, rotation and translation of unit outline points."""
    x, y = pts[:, 0], pts[:, 1]
    x = x + p["warp_amp"] * np.sin(p["warp_freq"] * y + p["warp_phase"]) + p["bend"] * y * y
    y = y + p["warp_amp"] * np.sin(p["warp_freq"] * x + p["warp_phase"] * 0.7)
    x = x + p["shear"] * y
    x, y = x * p["half_w"], y * p["half_h"]
    c, s = np.cos(p["angle"]), np.sin(p["angle"])
    return np.stack([c * x - s * y + p["cx"], s * x + c * y + p["cy"]], 1)


def _scaled_count(count, clutter: float) -> int:
    return int(round(int(count) * clutter))


def _background(rng: np.random.Generator, h: int, w: int, gradient_only: bool = False
                ) -> np.ndarray:
    """A float32 ``(h, w, 3)`` background: gradient, stripes or blotchy colour noise."""
    kind = rng.integers(3)
    if gradient_only:
        kind = 0
    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    if kind == 2:
        gh, gw = int(rng.integers(2, 12)), int(rng.integers(2, 12))
        grid = rng.uniform(0, 255, (gh, gw, 3)).astype(np.float32)
        interp = cv2.INTER_NEAREST if rng.random() < 0.3 else cv2.INTER_LINEAR
        return cv2.resize(grid, (w, h), interpolation=interp)
    ang = rng.uniform(0, np.pi)
    proj = (np.arange(w, dtype=np.float32)[None, :] * np.float32(np.cos(ang))
            + np.arange(h, dtype=np.float32)[:, None] * np.float32(np.sin(ang)))
    if kind == 0:
        t = (proj - proj.min()) / max(float(proj.max() - proj.min()), 1.0)
    else:
        period = rng.uniform(6, 40)
        t = 0.5 + 0.5 * np.sin(proj * np.float32(2 * np.pi / period))
    return c0 + t[..., None] * (c1 - c0)


def _strokes(rng: np.random.Generator, img: np.ndarray, count: int, max_thick: int) -> None:
    """Draws random polylines and arcs (distractors that are not objects) in place."""
    h, w = img.shape[:2]
    for _ in range(count):
        colour = tuple(float(v) for v in rng.uniform(0, 255, 3))
        thick = int(rng.integers(1, max_thick + 1))
        if rng.random() < 0.6:
            n = int(rng.integers(2, 5))
            pts = np.stack([rng.uniform(0, w, n), rng.uniform(0, h, n)], 1).astype(np.int32)
            cv2.polylines(img, [pts], False, colour, thick, cv2.LINE_AA)
        else:
            centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
            axes = (int(rng.uniform(5, w / 3)), int(rng.uniform(5, h / 3)))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), start,
                        start + float(rng.uniform(40, 200)), colour, thick, cv2.LINE_AA)


def _object_params(rng: np.random.Generator, h: int, w: int, prev: Optional[Dict],
                   min_size: float, max_fraction: float, distortion: float) -> Dict:
    # Log-uniform size, so small, medium and large objects are all common.
    size = float(np.exp(rng.uniform(np.log(min_size), np.log(max_fraction * min(h, w)))))
    aspect = float(np.exp(rng.uniform(np.log(0.45), np.log(2.2))))
    if prev is not None and rng.random() < 0.35:  # place next to the previous object: overlaps
        cx = prev["cx"] + rng.normal(0, 0.6) * prev["half_w"]
        cy = prev["cy"] + rng.normal(0, 0.6) * prev["half_h"]
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    return {
        "half_w": 0.5 * size * min(1.0, aspect), "half_h": 0.5 * size * min(1.0, 1.0 / aspect),
        "cx": float(np.clip(cx, 0, w)), "cy": float(np.clip(cy, 0, h)),
        "angle": rng.uniform(0, 2 * np.pi), "shear": distortion * rng.uniform(-0.35, 0.35),
        "warp_amp": distortion * rng.uniform(0, 0.12), "warp_freq": rng.uniform(1, 3),
        "warp_phase": rng.uniform(0, 2 * np.pi), "bend": distortion * rng.uniform(-0.25, 0.25),
    }


def render_image(rng: np.random.Generator, height: int, width: int, num_classes: int,
                 min_objects: int, max_objects: int, min_visible_fraction: float = 0.25,
                 return_owner: bool = False, min_object_size: float = MIN_OBJECT_SIZE,
                 max_object_fraction: float = MAX_OBJECT_FRACTION, distortion: float = 1.0,
                 clutter: float = 1.0) -> Dict:
    """Draws one synthetic image and its annotations.

    Args:
        rng: the image's generator (all randomness comes from it).
        height, width: image size in pixels.
        num_classes: shapes ``SHAPE_NAMES[:num_classes]`` are used.
        min_objects, max_objects: objects drawn (before occluded ones are dropped).
        min_visible_fraction: annotate an object if this share of its pixels is visible.
        return_owner: also return ``"owner"`` and ``"object_index"`` (for tests/visualising).
        min_object_size: size in px of the smallest object (the geometric mean of its
            unrotated width and height is drawn log-uniformly between the two bounds).
        max_object_fraction: size of the largest object as a share of ``min(height, width)``.
        distortion: scales the random shear, bend and warp of every object (0 = only rotation
            and anisotropic scale, 1 = the full non-rigid deformation).
        clutter: scales the number of distractor strokes, and with ``clutter < 1`` a share
            ``1 - clutter`` of the images get a plain gradient background instead of a
            textured one (0 = no strokes, smooth backgrounds only).

    Returns:
        ``{"image": np.ndarray (H, W, 3) uint8 RGB, "boxes": (M, 4) float32 XYXY px,
        "labels": (M,) int64 in 0..num_classes-1, "areas": (M,) float32 visible pixels}``,
        plus with ``return_owner`` ``"owner": (H, W) int16`` = index of the object that drew
        each pixel last (-1 = background), ``"object_index": (M,)`` = the owner index of each
        box and ``"full_areas"``: in-image pixels of every drawn object before occlusion.
    """
    h, w = height, width
    # With the defaults (distortion = clutter = 1) the draws below are exactly those of the
    # original generator, so the default images never change.
    plain = clutter < 1.0 and rng.random() >= clutter
    canvas = _background(rng, h, w, gradient_only=plain)
    _strokes(rng, canvas, _scaled_count(rng.integers(0, 6), clutter), 4)
    owner = np.full((h, w), -1, np.int16)
    scratch = np.zeros((h, w), np.uint8)
    labels, full_areas, prev = [], [], None
    for i in range(int(rng.integers(min_objects, max_objects + 1))):
        label = int(rng.integers(num_classes))
        p = _object_params(rng, h, w, prev, min_object_size, max_object_fraction, distortion)
        outlines = [_deform(o, p) for o in _SHAPES[SHAPE_NAMES[label]]]
        lo = np.floor(outlines[0].min(0)).astype(int).clip(0, [w - 1, h - 1])
        hi = np.ceil(outlines[0].max(0)).astype(int).clip(0, [w - 1, h - 1]) + 1
        roi = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        sub = scratch[roi]
        sub[:] = 0
        for k, o in enumerate(outlines):  # the second outline (ring) is cut out as a hole
            pts = np.round((o - lo) * (1 << _SHIFT)).astype(np.int32)
            cv2.fillPoly(sub, [pts], 0 if k else 1, cv2.LINE_8, _SHIFT)
        m = sub.astype(bool)
        centre_px = canvas[int(min(p["cy"], h - 1)), int(min(p["cx"], w - 1))]
        for _ in range(8):  # a colour that stands out from the background it sits on
            colour = rng.uniform(0, 255, 3).astype(np.float32)
            if np.abs(colour - centre_px).sum() > 120:
                break
        shade = 1.0 + rng.uniform(-0.25, 0.25) * np.linspace(-1, 1, m.shape[1], dtype=np.float32)
        fill = np.broadcast_to((colour[None, :] * shade[:, None]).clip(0, 255), m.shape + (3,))
        canvas[roi][m] = fill[m]
        owner[roi][m] = i
        labels.append(label)
        full_areas.append(int(m.sum()))
        prev = p
    if rng.random() < 0.5:  # thin strokes over the objects: occluders that are not objects
        _strokes(rng, canvas, _scaled_count(rng.integers(1, 4), clutter), 1)
    canvas += rng.integers(-10, 11, (h, w, 1)).astype(np.float32)
    image = canvas.clip(0, 255).astype(np.uint8)

    boxes, keep_labels, areas, kept = [], [], [], []
    for i, label in enumerate(labels):
        ys, xs = np.nonzero(owner == i)
        if xs.size == 0 or xs.size < min_visible_fraction * full_areas[i]:
            continue
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        keep_labels.append(label)
        areas.append(xs.size)
        kept.append(i)
    out = {"image": image, "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
           "labels": np.asarray(keep_labels, np.int64), "areas": np.asarray(areas, np.float32)}
    if return_owner:
        out.update(owner=owner, object_index=np.asarray(kept, np.int64),
                   full_areas=np.asarray(full_areas, np.int64))
    return out


class SyntheticDataset:
    """In-memory synthetic detection dataset (images are drawn on demand, a few ms each).

    Items are ``(image: uint8 (3, H, W) RGB, target)`` with the target format of
    ``dcn_det.data.base.make_target``; ``image_id`` is ``index + 1`` (as in the written COCO
    file). ``get_annotations(idx)`` gives the untransformed ground truth.

    Args:
        num_images: dataset length.
        seed: base seed; with ``split`` and the index it fixes every image.
        image_size: ``(h, w)`` of the generated images.
        num_classes: number of shape classes, 1..6 (the first ``num_classes`` of ``SHAPE_NAMES``).
        min_objects, max_objects: objects drawn per image (occluded ones may be dropped, the
            last one drawn never is, so every image has at least one box).
        split: a name mixed into the seed so "train" and "val" differ.
        transforms: ``(image HWC uint8, target) -> (image, target)``, e.g. ``Compose``.
        portrait_fraction: probability of swapping ``h`` and ``w`` for an image (mixed
            orientations exercise aspect-ratio grouping).
        min_visible_fraction: an object is annotated if at least this share of it is visible.
        min_object_size: px, the smallest object drawn (default 12: a hard small-object tail).
        max_object_fraction: the largest object as a share of the image's short side.
        distortion: 0..1, strength of the non-rigid deformation (see :func:`render_image`).
        clutter: 0..1, amount of distractor strokes and textured backgrounds.
    """

    def __init__(self, num_images: int, seed: int = 0, image_size: Sequence[int] = (256, 320),
                 num_classes: int = 4, min_objects: int = 1, max_objects: int = 6,
                 split: str = "train", transforms: Optional[Callable] = None,
                 portrait_fraction: float = 0.0, min_visible_fraction: float = 0.25,
                 min_object_size: float = MIN_OBJECT_SIZE,
                 max_object_fraction: float = MAX_OBJECT_FRACTION, distortion: float = 1.0,
                 clutter: float = 1.0):
        if not isinstance(num_images, int) or num_images < 0:
            raise ValueError(f"num_images must be an int >= 0, got {num_images!r}")
        if not 1 <= num_classes <= len(SHAPE_NAMES):
            raise ValueError(f"num_classes must be in 1..{len(SHAPE_NAMES)} (shapes "
                             f"{SHAPE_NAMES}), got {num_classes!r}")
        if len(image_size) != 2 or min(image_size) < 32:
            raise ValueError(f"image_size must be (h, w) with both >= 32, got {tuple(image_size)!r}")
        if not 1 <= min_objects <= max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got min_objects={min_objects}, "
                             f"max_objects={max_objects}")
        if not 0.0 <= portrait_fraction <= 1.0:
            raise ValueError(f"portrait_fraction must be in [0, 1], got {portrait_fraction!r}")
        if not 0.0 < max_object_fraction <= 1.0:
            raise ValueError(f"max_object_fraction must be in (0, 1], got {max_object_fraction!r}")
        if not 0.0 < min_object_size < max_object_fraction * min(image_size):
            raise ValueError(
                f"need 0 < min_object_size < max_object_fraction * min(image_size); got "
                f"min_object_size={min_object_size!r}, max_object_fraction="
                f"{max_object_fraction!r}, image_size={tuple(image_size)!r}")
        for name, value in (("distortion", distortion), ("clutter", clutter)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        self.num_images = num_images
        self.seed = int(seed)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.num_classes = num_classes
        self.min_objects, self.max_objects = min_objects, max_objects
        self.split = split
        self.transforms = transforms
        self.portrait_fraction = float(portrait_fraction)
        self.min_visible_fraction = float(min_visible_fraction)
        self.min_object_size = float(min_object_size)
        self.max_object_fraction = float(max_object_fraction)
        self.distortion, self.clutter = float(distortion), float(clutter)
        self.class_names = list(SHAPE_NAMES[:num_classes])
        self._split_code = zlib.crc32(split.encode("utf-8"))

    def __len__(self) -> int:
        return self.num_images

    @property
    def source(self) -> str:
        """How errors and reports name this dataset (it has no file)."""
        return f"the synthetic dataset (split {self.split!r}, seed {self.seed})"

    def _check_index(self, idx: int) -> int:
        if not -self.num_images <= idx < self.num_images:
            raise IndexError(f"index {idx} out of range for SyntheticDataset of {self.num_images} images")
        return idx % self.num_images

    def image_hw(self, idx: int) -> Tuple[int, int]:
        """``(h, w)`` of image ``idx`` without drawing it (for aspect-ratio grouping)."""
        idx = self._check_index(idx)
        h, w = self.image_size
        if self.portrait_fraction > 0:
            flip = np.random.default_rng([self.seed, self._split_code, idx, 1]).random()
            if flip < self.portrait_fraction:
                h, w = w, h
        return h, w

    def generate(self, idx: int) -> Dict:
        """Draws image ``idx``: the dict of ``render_image`` (image, boxes, labels, areas)."""
        idx = self._check_index(idx)
        h, w = self.image_hw(idx)
        rng = np.random.default_rng([self.seed, self._split_code, idx])
        return render_image(rng, h, w, self.num_classes, self.min_objects, self.max_objects,
                            self.min_visible_fraction, min_object_size=self.min_object_size,
                            max_object_fraction=self.max_object_fraction,
                            distortion=self.distortion, clutter=self.clutter)

    def get_annotations(self, idx: int) -> Dict:
        """Untransformed ground truth of image ``idx`` (target format, plus ``"areas"``)."""
        s = self.generate(idx)
        ann = make_target(s["boxes"], s["labels"], self._check_index(idx) + 1, s["image"].shape[:2])
        ann["areas"] = s["areas"]
        return ann

    def __getitem__(self, idx: int):
        s = self.generate(idx)
        target = make_target(s["boxes"], s["labels"], self._check_index(idx) + 1, s["image"].shape[:2])
        return finish_item(s["image"], target, self.transforms)
