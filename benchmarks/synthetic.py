"""Time to generate one synthetic image (``SyntheticDataset.generate``), as a table.

Usage::

    python benchmarks/synthetic.py [--images 20] [--repeats 3]

Rows: the dataset defaults (``synthetic.yaml``'s generator: 1-6 objects, full warps and
clutter) and the demo's shapes (``synthetic_demo.yaml``: 3-10 objects, milder warps), at the
tests' 256x320 and the demo's image sizes. Each row is the median over ``--repeats`` rounds of
the mean time per image over ``--images`` images (one untimed image first). Was a test
(``per_image < 50 ms``, ~6 ms on one idle core); a wall-time bound fails on a loaded machine for
reasons that are not the generator's, so it is measured here instead.
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dcn_det.data.synthetic import SyntheticDataset  # noqa: E402

VARIANTS = {
    # name: SyntheticDataset keyword arguments
    "default 256x320": dict(image_size=(256, 320)),
    "default 600x800": dict(image_size=(600, 800)),
    "demo 256x320": dict(image_size=(256, 320), min_objects=3, max_objects=10,
                         min_object_size=32, max_object_fraction=0.6, distortion=0.4,
                         clutter=0.3),
}


def per_image_ms(kwargs: dict, images: int, repeats: int) -> float:
    ds = SyntheticDataset(images, seed=0, **kwargs)
    ds.generate(0)
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(images):
            ds.generate(i)
        rounds.append((time.perf_counter() - start) / images * 1e3)
    return statistics.median(rounds)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"{'variant':<18} {'ms per image':>12}")
    for name, kwargs in VARIANTS.items():
        print(f"{name:<18} {per_image_ms(kwargs, args.images, args.repeats):>12.1f}", flush=True)
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
