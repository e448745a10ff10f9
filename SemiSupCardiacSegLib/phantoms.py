"""Synthetic LGE-MRI-like left-atrium phantoms, for tests and for the demo on a fresh clone.

Everything is defined in millimetres on the voxel grid, so a phantom keeps its physical size when
the spacing changes. A phantom contains (intensities before bias, noise and z-scoring):

* the left-atrium (LA) body: a smooth ellipsoid-like blob about 48 x 32 x 28 mm with a random
  low-frequency radial perturbation and a random in-plane rotation; blood pool intensity 1.0;
* four pulmonary-vein stubs (tubes about 10 mm across, 12-18 mm long) leaving the body
  posteriorly, left/right and superior/inferior, part of the label;
* a 2 mm atrial wall shell (dark, 0.25, with a few enhanced "scar" patches at 0.8), not labelled;
* other bright blood pools not touching the LA (an aorta tube and a left-ventricle ellipsoid), not
  labelled, so a model must use shape and context, not brightness alone;
* dark lungs at both sides, soft-tissue background (0.4) with smooth texture;
* a multiplicative smooth bias field (``bias_strength``), Rician noise (``noise_std``, relative to
  the blood intensity), then a z-score over the whole volume, as in the LA challenge files.

``pad_into_field`` places a real LA crop in a scanner-sized field (tests and benchmarks of coarse
localization).

Array layout as the LA challenge ``.h5``: ``image[i, j, k]`` = voxel (i, j, k), axis 2 the slice
axis (88 slices of 0.625 mm by default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .volume import Volume


@dataclass
class Phantom:
    """image: float32 (X, Y, Z) z-scored; label: uint8 (X, Y, Z), 1 = LA cavity; spacing in mm."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance (mm) from points p (..., 3) to the segment a-b."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / float(ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def _smooth_noise(shape, rng: np.random.Generator, sigma_vox) -> np.ndarray:
    """Zero-mean, unit-max smooth random field."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="wrap")
    return f / (np.abs(f).max() + 1e-8)


def make_la_phantom(
    shape=(160, 144, 88),
    spacing=(0.625, 0.625, 0.625),
    seed: int = 0,
    noise_std: float = 0.15,
    bias_strength: float = 0.3,
) -> Phantom:
    """One phantom; deterministic for a given seed. shape in voxels, spacing in mm."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    sp = np.asarray(spacing, dtype=np.float64)
    extent = np.asarray(shape) * sp
    axes = [np.arange(n, dtype=np.float32) * s for n, s in zip(shape, sp)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # (X, Y, Z, 3) mm

    centre = extent / 2 + rng.uniform(-4, 4, 3) * np.array([1, 1, 0.5])
    angle = np.deg2rad(rng.uniform(-20, 20))
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    local = (grid - centre) @ rot  # LA-aligned coordinates
    semi = np.array([24.0, 16.0, 14.0]) * rng.uniform(0.9, 1.1, 3)
    rho = np.linalg.norm(local / semi, axis=-1)
    theta = np.arctan2(local[..., 1], local[..., 0])
    phi = np.arctan2(local[..., 2], np.linalg.norm(local[..., :2], axis=-1))
    a1, a2, a3 = rng.uniform(0.03, 0.08, 3)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    wobble = 1.0 + a1 * np.sin(2 * theta + p1) + a2 * np.cos(3 * theta + p2) * np.cos(phi) + a3 * np.sin(2 * phi)
    body = rho <= wobble

    # Pulmonary-vein stubs: start inside the body, leave posteriorly (+y) left/right, up/down.
    label = body.copy()
    for sx in (-1, 1):
        for sz in (-1, 1):
            d = np.array([0.55 * sx, 0.75, 0.45 * sz]) + rng.normal(0, 0.08, 3)
            d /= np.linalg.norm(d)
            start = centre + rot @ (0.6 * semi * d)
            end = start + rot @ (d * (semi.max() * 0.4 + rng.uniform(12, 18)))
            radius = rng.uniform(4.5, 5.5)
            label |= _segment_distance(grid, start, end) <= radius

    image = np.full(shape, 0.4, dtype=np.float32)
    image += 0.08 * _smooth_noise(shape, rng, 6.0 / sp.mean())
    # Lungs: dark ellipsoids at both sides (along x), clipped to the field of view.
    for side in (0.0, 1.0):
        lc = np.array([side * extent[0], extent[1] * 0.55, extent[2] / 2])
        lung = np.linalg.norm((grid - lc) / np.array([22.0, 40.0, 60.0]), axis=-1) <= 1
        image[lung] = 0.06
    # Other blood pools, kept at least 6 mm away from the LA.
    far = ndimage.distance_transform_edt(~label, sampling=sp) > 6.0
    aorta_a = centre + np.array([rng.uniform(-6, 6), -semi[1] - 16, -extent[2]])
    aorta_b = aorta_a + np.array([0.0, 0.0, 3 * extent[2]])
    aorta = (_segment_distance(grid, aorta_a, aorta_b) <= rng.uniform(10, 13)) & far
    lv_c = centre + np.array([-semi[0] - 14, -semi[1] - 6, -8.0])
    lv = (np.linalg.norm((grid - lv_c) / np.array([18.0, 16.0, 22.0]), axis=-1) <= 1) & far
    image[aorta | lv] = 0.95
    # Atrial wall: a 2 mm shell, dark with a few enhanced patches.
    d_out = ndimage.distance_transform_edt(~label, sampling=sp)
    wall = (~label) & (d_out <= 2.0)
    scar = _smooth_noise(shape, rng, 4.0 / sp.mean()) > 0.45
    image[wall] = np.where(scar[wall], 0.8, 0.25)
    image[label] = 1.0

    # Bias field (smooth, multiplicative) and Rician noise.
    norm = [(g - e / 2) / (e / 2) for g, e in zip(np.moveaxis(grid, -1, 0), extent)]
    c = rng.uniform(-1, 1, 6)
    field = (
        c[0] * norm[0]
        + c[1] * norm[1]
        + c[2] * norm[2]
        + c[3] * norm[0] * norm[1]
        + c[4] * norm[1] ** 2
        + c[5] * norm[2] ** 2
    )
    field = field / (np.abs(field).max() + 1e-8)
    image *= (1.0 + bias_strength * field).astype(np.float32)
    n1 = rng.normal(0, noise_std, shape).astype(np.float32)
    n2 = rng.normal(0, noise_std, shape).astype(np.float32)
    image = np.sqrt((image + n1) ** 2 + n2**2)
    image = ndimage.gaussian_filter(image, 0.6 * 0.625 / sp.mean())  # slight blur: MR point-spread
    image = (image - image.mean()) / image.std()
    return Phantom(image.astype(np.float32), label.astype(np.uint8), tuple(float(s) for s in sp))


def make_la_dataset(n: int, seed: int = 0, **kw) -> list[Phantom]:
    """``n`` phantoms with seeds ``seed .. seed + n - 1``."""
    return [make_la_phantom(seed=seed + i, **kw) for i in range(n)]


def write_phantom_h5(phantom: Phantom, path: str | os.PathLike) -> Path:
    """Write as an LA-challenge style .h5 ('image' float32, 'label' uint8, gzip), atomically."""
    from .io import write_h5_case

    return write_h5_case(path, phantom.image, phantom.label, layout="xyz", overwrite=True)


def pad_into_field(image: Volume, label: Volume, shape: tuple[int, int, int], at=(150, 260, 0), seed: int = 0):
    """A real LA crop and its label placed at voxel ``at`` of a field of ``shape`` voxels (same spacing),
    the other voxels drawn from the crop's own darker half: a scanner-sized field of view without other
    anatomy (the LA2018 files hold atrium-centred crops only). -> (image Volume, label Volume)."""
    if any(a + n > s for a, n, s in zip(at, image.shape, shape)):
        raise ValueError(f"a {image.shape} crop at {at} does not fit in a {shape} field")
    rng = np.random.default_rng(seed)
    darker = image.array[image.array < np.median(image.array)]
    big = rng.choice(darker, size=shape).astype(np.float32)
    big_label = np.zeros(shape, np.uint8)
    box = tuple(slice(a, a + n) for a, n in zip(at, image.shape))
    big[box], big_label[box] = image.array, label.array
    return Volume(big, image.spacing), Volume(big_label, image.spacing)
