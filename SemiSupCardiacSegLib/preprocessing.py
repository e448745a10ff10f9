"""Model space: canonical axes, the model's voxel spacing, z-scored intensities; and the exact way back.

``to_model_space`` is used for training data and for inference alike, so a network always sees
inputs prepared the same way. ``ModelSpaceImage.to_input_grid`` maps any model-space output
(probabilities, SDM, uncertainty, labels) back onto the input's grid: same shape, spacing, origin
and direction, voxel for voxel.

Grid mapping: after reorientation (pure axis permutation/flip, see ``volume.canonical_reorientation``)
the canonical grid has spacing ``s`` and shape ``n``; the model grid shares voxel 0's centre and has
spacing ``s'`` and shape ``round(n * s / s')``. Model index ``j`` sits at canonical index
``j * s' / s``; canonical index ``i`` sits at model index ``i * s / s'``. Both directions are
linear interpolations (scipy ``affine_transform``) at those exact positions. When downsampling we
low-pass first with a Gaussian of sigma ``(s'/s - 1) / 2`` voxels (as skimage's anti-aliasing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import InputError
from .volume import AxisReorientation, Grid, Volume, canonical_reorientation


@dataclass(frozen=True)
class Preprocessing:
    """How images are brought to model space.

    spacing: mm per voxel of the model grid (i, j, k) (3D models: LA).
    in_plane_shape: (X, Y) voxels instead, for cine stacks: every slice is resized to this shape
      whatever its spacing and the slice axis k is kept as is (the SSL4MIS/BMT-CTL practice of
      resizing slices to a fixed size; ACDC h5 files store no spacing, so a mm grid is not possible).
    reorient: bring the volume to canonical axes first (3D models). Cine stacks are oblique short-axis
      planes; they are used in their stored (i, j, slice) order, so cine models set False.
    """

    spacing: tuple[float, float, float] = (0.625, 0.625, 0.625)
    normalization: str = "zscore"
    in_plane_shape: tuple[int, int] | None = None
    reorient: bool = True

    def to_dict(self) -> dict:
        d = {"spacing": [float(s) for s in self.spacing], "normalization": self.normalization}
        if self.in_plane_shape is not None:
            d["in_plane_shape"] = [int(s) for s in self.in_plane_shape]
        if not self.reorient:
            d["reorient"] = False
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        shape = d.get("in_plane_shape")
        return cls(
            spacing=tuple(float(s) for s in d.get("spacing", (1.0, 1.0, 1.0))),
            normalization=d.get("normalization", "zscore"),
            in_plane_shape=None if shape is None else (int(shape[0]), int(shape[1])),
            reorient=bool(d.get("reorient", True)),
        )

    def model_spacing(self, canonical_shape: tuple[int, ...], canonical_spacing: np.ndarray) -> np.ndarray:
        """The model grid's spacing (mm) for an input of this canonical shape and spacing."""
        if self.in_plane_shape is None:
            return np.asarray(self.spacing, float)
        cs = np.asarray(canonical_spacing, float)
        return np.array(
            [
                cs[0] * canonical_shape[0] / self.in_plane_shape[0],
                cs[1] * canonical_shape[1] / self.in_plane_shape[1],
                cs[2],
            ]
        )


def check_image_values(array: np.ndarray, name: str = "image") -> None:
    """Refuse NaN/Inf voxels and constant images, naming the problem."""
    if array.size == 0:
        raise InputError(f"{name} is empty (shape {array.shape})")
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - finite.sum())
        raise InputError(f"{name} has {bad} NaN or Inf voxels")
    if float(array.max()) == float(array.min()):
        raise InputError(f"{name} is constant (every voxel = {float(array.min())}); nothing to segment")


def zscore(array: np.ndarray) -> np.ndarray:
    """(x - mean) / std over the whole volume, float32."""
    a = array.astype(np.float32, copy=False)
    std = float(a.std())
    if std == 0.0:
        raise InputError("image is constant; cannot z-score")
    return ((a - float(a.mean())) / std).astype(np.float32)


def _scale_grid(array: np.ndarray, step: np.ndarray, out_shape: tuple[int, ...], order: int) -> np.ndarray:
    """Sample ``array`` (X, Y, Z) at indices ``j * step`` for j in ``out_shape``."""
    if np.allclose(step, 1.0) and tuple(array.shape) == tuple(out_shape):
        return array.copy()
    return ndimage.affine_transform(
        array,
        np.asarray(step, dtype=np.float64),
        output_shape=tuple(int(s) for s in out_shape),
        order=order,
        mode="nearest",
        prefilter=False,
    )


def resample_image(array: np.ndarray, spacing: np.ndarray, new_spacing: np.ndarray, order: int = 1) -> np.ndarray:
    """Resample a (X, Y, Z) image from ``spacing`` to ``new_spacing`` (mm), anti-aliased when downsampling."""
    spacing = np.asarray(spacing, float)
    new_spacing = np.asarray(new_spacing, float)
    step = new_spacing / spacing
    out_shape = tuple(max(1, int(round(n / s))) for n, s in zip(array.shape, step))
    src = array.astype(np.float32, copy=False)
    sigma = np.maximum(step - 1.0, 0.0) / 2.0
    if np.any(sigma > 0):
        src = ndimage.gaussian_filter(src, sigma=sigma, mode="nearest")
    return _scale_grid(src, step, out_shape, order)


def resample_labels(
    labels: np.ndarray, spacing: np.ndarray, new_spacing: np.ndarray, num_classes: int | None = None
) -> np.ndarray:
    """Resample an integer label map by linear interpolation of each class's indicator, then argmax."""
    labels = np.asarray(labels)
    step = np.asarray(new_spacing, float) / np.asarray(spacing, float)
    out_shape = tuple(max(1, int(round(n / s))) for n, s in zip(labels.shape, step))
    if np.allclose(step, 1.0):
        return labels.astype(np.uint8)
    classes = range(int(num_classes) if num_classes else int(labels.max()) + 1)
    scores = np.stack([_scale_grid((labels == c).astype(np.float32), step, out_shape, 1) for c in classes])
    return np.argmax(scores, axis=0).astype(np.uint8)


@dataclass
class ModelSpaceImage:
    """An image in model space plus what is needed to map results back onto the input grid.

    array: (X', Y', Z') float32 on the model grid. input_grid: the input Volume's geometry (its
    voxels are not kept). canonical_shape / canonical_spacing: the grid after reorientation.
    """

    array: np.ndarray
    reorientation: AxisReorientation
    canonical_shape: tuple[int, int, int]
    canonical_spacing: np.ndarray
    model_spacing: np.ndarray
    input_grid: Grid

    def to_input_grid(self, data: np.ndarray, order: int = 1) -> np.ndarray:
        """Model-space (X', Y', Z') or (C, X', Y', Z') -> input grid (I, J, K) or (C, I, J, K).

        order 1 for continuous maps; for label maps pass per-class probabilities and argmax
        afterwards, or use order 0.
        """
        if data.ndim == 4:
            return np.stack([self.to_input_grid(d, order) for d in data], axis=0)
        step = self.canonical_spacing / self.model_spacing
        canon = _scale_grid(data, step, self.canonical_shape, order)
        return self.reorientation.invert(canon)


#: The smallest image, in model voxels along every axis, that inference accepts.
MIN_MODEL_VOXELS = 4


def to_model_space(volume: Volume, prep: Preprocessing) -> ModelSpaceImage:
    """Input Volume -> ModelSpaceImage: reorient to canonical axes, resample, normalize."""
    check_image_values(volume.array)
    reo = (
        canonical_reorientation(volume.direction)
        if prep.reorient
        else AxisReorientation((0, 1, 2), (False, False, False))
    )
    canon = reo.apply(volume.array)
    canon_spacing = volume.spacing[list(reo.perm)]
    model_spacing = prep.model_spacing(canon.shape, canon_spacing)
    extent = np.asarray(canon.shape) * canon_spacing
    if prep.in_plane_shape is not None:
        if min(canon.shape[:2]) < MIN_MODEL_VOXELS:
            raise InputError(
                f"image is too small: slices of {canon.shape[0]} x {canon.shape[1]} voxels, "
                f"fewer than {MIN_MODEL_VOXELS} along an in-plane axis"
            )
    elif np.any(extent < MIN_MODEL_VOXELS * model_spacing):
        raise InputError(
            f"image is too small: it covers {' x '.join(f'{e:.1f}' for e in extent)} mm, less than "
            f"{MIN_MODEL_VOXELS} voxels of the model's {' x '.join(f'{m:g}' for m in model_spacing)} mm along an axis"
        )
    resampled = resample_image(canon.astype(np.float32), canon_spacing, model_spacing)
    if prep.normalization == "zscore":
        resampled = zscore(resampled)
    elif prep.normalization != "none":
        raise ValueError(f"unknown normalization '{prep.normalization}'")
    return ModelSpaceImage(resampled, reo, tuple(canon.shape), canon_spacing, model_spacing, volume.grid)


def labels_to_model_space(label: Volume, msi: ModelSpaceImage, num_classes: int) -> np.ndarray:
    """Bring a label map on the same grid as the image into model space (uint8, model grid)."""
    if label.shape != msi.input_grid.shape:
        raise InputError(f"label shape {label.shape} differs from image shape {msi.input_grid.shape}")
    if not label.same_grid(msi.input_grid):
        raise InputError("label and image have different geometry (spacing, origin or direction)")
    canon = msi.reorientation.apply(label.array)
    out = resample_labels(canon, msi.canonical_spacing, msi.model_spacing, num_classes)
    return out


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the foreground bounding box grown by ``margin`` voxels (clipped), or None if empty."""
    idx = np.nonzero(mask)
    if len(idx[0]) == 0:
        return None
    return tuple(
        slice(max(0, int(i.min()) - margin), min(n, int(i.max()) + 1 + margin)) for i, n in zip(idx, mask.shape)
    )
