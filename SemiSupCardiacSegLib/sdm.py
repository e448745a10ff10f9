"""Signed distance maps (SDM) of binary and multi-class masks, normalized to [-1, 1].

Convention (SASSNet/DTC reference code, ``compute_sdf``): negative inside, positive outside, 0 on
the boundary. The boundary is the set of foreground voxels with a background face-neighbour
(the "inner" boundary). Inside distances are divided by their maximum inside the mask and outside
distances by their maximum outside it, so the map spans [-1, 1] and each side is scale-free.

Distances come from scipy's exact Euclidean distance transform. ``spacing`` (mm) makes them
physical before the normalization; in model space the grid is isotropic, so it only matters for
anisotropic inputs.

Degenerate masks, where the reference code is silent or returns 0 everywhere, are defined here as:
* empty mask (no foreground): +1 everywhere ("far outside"); the reference returns 0, which would
  teach the SDM head that every voxel lies on a surface.
* all-foreground mask: -1 everywhere ("deep inside").
Both are NaN-free. Cost: two EDTs per mask; see ``benchmarks/sdm_speed.py`` for measured timings.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage


def _face_structure(ndim: int) -> np.ndarray:
    return ndimage.generate_binary_structure(ndim, 1)


def signed_distance_map(mask: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Normalized SDM of a binary mask. mask: (...) bool/int, 2D or 3D. Returns float32, same shape."""
    mask = np.asarray(mask).astype(bool)
    if not mask.any():
        return np.ones(mask.shape, dtype=np.float32)
    if mask.all():
        return -np.ones(mask.shape, dtype=np.float32)
    sampling = None if spacing is None else tuple(float(s) for s in spacing)
    inside = ndimage.distance_transform_edt(mask, sampling=sampling)
    outside = ndimage.distance_transform_edt(~mask, sampling=sampling)
    sdm = outside / outside.max() - inside / inside.max()
    boundary = mask & ~ndimage.binary_erosion(mask, structure=_face_structure(mask.ndim), border_value=1)
    sdm[boundary] = 0.0
    return sdm.astype(np.float32)


def multiclass_sdm(labels: np.ndarray, num_classes: int, spacing: Sequence[float] | None = None) -> np.ndarray:
    """One SDM per foreground class. labels: (...) int in [0, num_classes). Returns (num_classes-1, ...) float32."""
    labels = np.asarray(labels)
    return np.stack([signed_distance_map(labels == c, spacing) for c in range(1, num_classes)], axis=0)


def sdm_to_probability(sdm, k: float = 1500.0):
    """Transform an SDM to a soft mask: sigmoid(-k * sdm) (DTC's T^{-1}; works on numpy or torch)."""
    try:
        import torch

        if isinstance(sdm, torch.Tensor):
            return torch.sigmoid(-k * sdm)
    except ImportError:  # pragma: no cover
        pass
    return 1.0 / (1.0 + np.exp(np.clip(k * np.asarray(sdm), -80, 80)))
