"""How long a signed distance map takes per training crop (it is computed per crop in DataLoader workers).

    python benchmarks/sdm_speed.py [--profile cpu-small] [--repeats 20] [--smoke]

Writes benchmarks/results/<profile>/sdm_speed.json and .md. Compares against the time of one
training step (measured in the training log) to show the SDM is not the bottleneck.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from common import publish

from SemiSupCardiacSegLib.sdm import signed_distance_map

CROPS = {"cpu-small (1.25 mm)": (64, 64, 32), "papers (0.625 mm)": (112, 112, 80)}


def blob(shape, rng) -> np.ndarray:
    """A random ellipsoid filling about a third of the crop (a typical LA crop)."""
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    c = rng.uniform(-0.2, 0.2, size=(3, 1, 1, 1))
    r = rng.uniform(0.45, 0.7, size=(3, 1, 1, 1))
    return (((g - c) / r) ** 2).sum(0) <= 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--profile", default="cpu-small")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite; writes nothing")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    crops = {"smoke": (16, 16, 8)} if args.smoke else CROPS
    rows = {}
    for name, shape in crops.items():
        masks = [blob(shape, rng) for _ in range(max(1, 2 if args.smoke else args.repeats))]
        signed_distance_map(masks[0])  # warm-up
        t = []
        for m in masks:
            t0 = time.perf_counter()
            signed_distance_map(m)
            t.append(time.perf_counter() - t0)
        rows[name] = {
            "shape": list(shape),
            "median_ms": 1000 * float(np.median(t)),
            "p90_ms": 1000 * float(np.percentile(t, 90)),
            "n": len(t),
        }
    if args.smoke:
        print(rows)
        return 0
    publish(
        args.profile,
        "sdm_speed",
        rows,
        ["crop", "shape", "median ms", "p90 ms"],
        lambda k, v: [k, "x".join(map(str, v["shape"])), f"{v['median_ms']:.1f}", f"{v['p90_ms']:.1f}"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
