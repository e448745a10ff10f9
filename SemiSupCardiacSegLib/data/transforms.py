"""Augmentation and cropping on numpy arrays (X, Y, Z); every random draw comes from a given Generator."""

from __future__ import annotations

import numpy as np

#: The (X, Y) plane in which training rotates and flips; flips of these axes are also the test-time
#: augmentation a trained model declares (``inference.tta_flip_axes``).
AUGMENT_PLANE = (0, 1)


def random_rot_flip(image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator):
    """Rotate by k*90 degrees in the (X, Y) plane and flip along X or Y (UA-MT/SASSNet RandomRotFlip)."""
    k = int(rng.integers(0, 4))
    axis = AUGMENT_PLANE[int(rng.integers(0, 2))]
    image = np.flip(np.rot90(image, k, axes=AUGMENT_PLANE), axis=axis)
    if label is not None:
        label = np.flip(np.rot90(label, k, axes=AUGMENT_PLANE), axis=axis)
    return image, label


def pad_to(array: np.ndarray, size: tuple[int, int, int], value: float = 0.0) -> np.ndarray:
    """Pad (X, Y, Z) symmetrically with ``value`` so every axis is at least ``size``."""
    pads = []
    for n, s in zip(array.shape, size):
        total = max(0, s - n)
        pads.append((total // 2, total - total // 2))
    if not any(p for pair in pads for p in pair):
        return array
    return np.pad(array, pads, mode="constant", constant_values=value)


def random_crop(image: np.ndarray, label: np.ndarray | None, size: tuple[int, int, int], rng: np.random.Generator):
    """Crop a random ``size`` window (padding first where the volume is smaller: image 0, label 0)."""
    image = pad_to(image, size, 0.0)
    if label is not None:
        label = pad_to(label, size, 0)
    starts = [int(rng.integers(0, n - s + 1)) for n, s in zip(image.shape, size)]
    sl = tuple(slice(a, a + s) for a, s in zip(starts, size))
    return np.ascontiguousarray(image[sl]), (np.ascontiguousarray(label[sl]) if label is not None else None)
