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


def random_intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random intensity changes of a z-scored crop (X, Y, Z), float32 out; each with its own
        probability, in this order (nnU-Net v2's default training transforms, the ones on intensity,
        without its blur and simulated low resolution; their values):

        * Gaussian noise, p 0.1: variance U(0, 0.1).
        * brightness, p 0.15: x * U(0.75, 1.25).
        * contrast, p 0.15: (x - mean) * U(0.75, 1.25) + mean, clipped to the crop's former range.
        * gamma, p 0.1 on the inverted image (-x) then p 0.3 on the image: the crop mapped to [0, 1]
          by its range, raised to gamma (U(0.7, 1) or U(1, 1.5), even odds), mapped back, then given
          back its former mean and standard deviation (so only the shape of the histogram changes).

        Made for an intensity outlier (a case whose blood pool is darker against the myocardium than
        any training case). Every draw comes from ``rng`` (the crop's own, after its crop was drawn, so
    turning this on moves no crop).
    """
    x = image.astype(np.float32, copy=True)
    u = rng.random(5)
    factors = rng.uniform(0.0, 1.0, size=5)
    if u[0] < 0.1:
        x += rng.normal(0.0, np.sqrt(0.1 * factors[0]), size=x.shape).astype(np.float32)
    if u[1] < 0.15:
        x *= np.float32(0.75 + 0.5 * factors[1])
    if u[2] < 0.15:
        lo, hi, mean = x.min(), x.max(), x.mean()
        x = np.clip((x - mean) * np.float32(0.75 + 0.5 * factors[2]) + mean, lo, hi)
    gammas = [(0.7 + 0.3 * f) if g < 0.5 else (1.0 + 0.5 * f) for g, f in zip(rng.random(2), factors[3:])]
    for invert, p, gamma, draw in ((True, 0.1, gammas[0], u[3]), (False, 0.3, gammas[1], u[4])):
        if draw < p:
            x = -_gamma(-x, gamma) if invert else _gamma(x, gamma)
    return x


def random_fold(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An inversion-recovery fold of a z-scored crop (X, Y, Z), float32 out: |x - c| with c drawn
    uniformly between the crop's 10th and 90th intensity percentiles, given back the crop's former
    mean and standard deviation.

    LGE images are magnitude images of an inversion-recovery signal: which tissue is nulled (dark)
    depends on the inversion time and the contrast's wash-out, so a blood pool that is bright in
    most scans is dark in some, against bright enhanced walls (the LA cases of train.list lines 27,
    32 and 41). A magnitude image at another inversion time is, to first order, the same image
    folded about the intensity of the tissue now nulled: what is darker than it turns bright. The
    fold teaches the network the atrium's shape and walls rather than the pool's brightness.
    Non-monotonic, unlike ``random_intensity``'s changes, which keep the order of intensities.
    """
    x = image.astype(np.float32, copy=False)
    lo, hi = np.percentile(x, [10.0, 90.0])
    c = np.float32(rng.uniform(lo, hi))
    y = np.abs(x - c)
    y_std = float(y.std())
    if y_std > 1e-7:
        y = (y - y.mean()) / y_std * x.std() + x.mean()
    return y.astype(np.float32)


def random_background_field(image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
    """A synthetic negative: a slab of a labeled crop (X, Y, Z) replaced by structureless noise and
    labelled background -> (image float32, label).

    The slab lies along one axis (X, Y or Z, even odds), from one face (even odds), 25-100 % of the
    crop's extent along that axis (uniform; the whole crop when the draw exceeds 1, i.e. with
    probability 1/4 a crop of noise alone). The noise is normal and independent per voxel, its mean
    the crop's q-th intensity percentile (q uniform in 5..50) and its spread the standard deviation
    of the crop's darker half times U(0.5, 1.5): what lies outside an atrium-centred crop in a
    scanner's field of view without the anatomy (no scan in the LA data shows more than the crop).

    Pairs with ``random_fold``: a fold teaches that a dark region can be the blood pool, and a
    network so taught, given no counterexample, also calls a large field of dark noise atrium
    (the withdrawn fold-only LA stage 4 did). Unlike the test of that failure (``phantoms.pad_into_field``,
    which resamples the crop's own darker half), the noise here is a normal distribution, so the
    test is not its training data.
    """
    x = image.astype(np.float32, copy=True)
    y = label.copy()
    axis = int(rng.integers(0, 3))
    from_start = bool(rng.integers(0, 2))
    extent = x.shape[axis]
    fraction = min(float(rng.uniform(0.25, 1.25)), 1.0)
    n = max(1, int(round(fraction * extent)))
    region = [slice(None)] * 3
    region[axis] = slice(0, n) if from_start else slice(extent - n, extent)
    region = tuple(region)
    median = np.median(x)
    darker = x[x < median]
    spread = float(darker.std()) if darker.size > 1 else float(x.std())
    mean = float(np.percentile(x, rng.uniform(5.0, 50.0)))
    shape = x[region].shape
    x[region] = rng.normal(mean, max(spread, 1e-3) * rng.uniform(0.5, 1.5), size=shape).astype(np.float32)
    y[region] = 0
    return x, y


def _gamma(x: np.ndarray, gamma: float) -> np.ndarray:
    """x mapped to [0, 1] by its range, raised to ``gamma``, mapped back; mean and std kept."""
    mean, std, lo = x.mean(), x.std(), x.min()
    span = max(float(x.max() - lo), 1e-7)
    y = np.power((x - lo) / span, gamma, dtype=np.float32) * span + lo
    y_std = float(y.std())
    if y_std > 1e-7:
        y = (y - y.mean()) / y_std * std + mean
    return y.astype(np.float32)


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
