"""Segmentation metrics on binary masks (2D or 3D), spacing-aware: distances in mm.

Definitions follow medpy's ``metric.binary`` (used by UA-MT, SASSNet, DTC and the LA papers'
tables), so numbers are comparable with the literature:
* surface of a mask = mask XOR its erosion by the face-connected structuring element (voxels on the
  array border count as surface);
* directed surface distances d(A -> B): for every surface voxel of A, the Euclidean distance (mm,
  with ``spacing``) to the nearest surface voxel of B (exact EDT);
* ``hd95`` = 95th percentile of d(pred -> ref) and d(ref -> pred) pooled (medpy ``hd95``);
* ``asd`` = mean of d(pred -> ref) (medpy ``asd``, directed, as in the LA papers);
  ``assd`` = mean of both directions pooled; ``hausdorff`` = maximum of both;
* ``ravd`` = |V_pred - V_ref| / V_ref as a fraction (not percent).

Empty-mask convention:
* both empty: dice = jaccard = precision = recall = 1, ravd = 0, all distances 0;
* exactly one empty: dice = jaccard = precision = recall = 0; distances are undefined -> NaN;
  ravd = 1 when pred is empty (all volume missed), NaN when ref is empty (no reference volume).
``summarize`` takes NaN-aware means and reports how many values were NaN, so such cases are
counted, never silently averaged in.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

METRIC_NAMES = ("dice", "jaccard", "hd95", "asd", "ravd", "precision", "recall")


def _check(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred).astype(bool)
    ref = np.asarray(ref).astype(bool)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if spacing is not None:
        sp = np.asarray(spacing, dtype=float)
        if sp.shape != (pred.ndim,) or not np.all(sp > 0):
            raise ValueError(f"spacing must have {pred.ndim} positive values (mm), got {list(np.ravel(spacing))}")
    return pred, ref


def _ratio(num: int, den: int, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return float(num) / float(den)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """2 |P & R| / (|P| + |R|)."""
    pred, ref = _check(pred, ref)
    tp = int((pred & ref).sum())
    return _ratio(2 * tp, int(pred.sum() + ref.sum()), not pred.any() and not ref.any())


def jaccard(pred: np.ndarray, ref: np.ndarray) -> float:
    """|P & R| / |P | R|."""
    pred, ref = _check(pred, ref)
    return _ratio(int((pred & ref).sum()), int((pred | ref).sum()), not pred.any() and not ref.any())


def precision(pred: np.ndarray, ref: np.ndarray) -> float:
    """|P & R| / |P|."""
    pred, ref = _check(pred, ref)
    return _ratio(int((pred & ref).sum()), int(pred.sum()), not pred.any() and not ref.any())


def recall(pred: np.ndarray, ref: np.ndarray) -> float:
    """|P & R| / |R| (sensitivity)."""
    pred, ref = _check(pred, ref)
    both_empty = not pred.any() and not ref.any()
    if not ref.any() and not both_empty:
        return 0.0
    return _ratio(int((pred & ref).sum()), int(ref.sum()), both_empty)


def ravd(pred: np.ndarray, ref: np.ndarray) -> float:
    """|V_pred - V_ref| / V_ref (fraction)."""
    pred, ref = _check(pred, ref)
    vr = int(ref.sum())
    if vr == 0:
        return 0.0 if not pred.any() else float("nan")
    return abs(int(pred.sum()) - vr) / vr


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels: mask XOR erosion (face connectivity)."""
    mask = np.asarray(mask).astype(bool)
    return mask ^ ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(d(pred -> ref), d(ref -> pred)) in mm, one value per surface voxel. Both masks must be non-empty."""
    pred, ref = _check(pred, ref, spacing)
    if not pred.any() or not ref.any():
        raise ValueError("surface distances need two non-empty masks")
    sp = tuple(float(s) for s in spacing)
    sp_pred, sp_ref = surface(pred), surface(ref)
    dt_ref = ndimage.distance_transform_edt(~sp_ref, sampling=sp)
    dt_pred = ndimage.distance_transform_edt(~sp_pred, sampling=sp)
    return dt_ref[sp_pred], dt_pred[sp_ref]


def _distance_metric(pred, ref, spacing, fn) -> float:
    pred, ref = _check(pred, ref, spacing)
    if not pred.any() and not ref.any():
        return 0.0
    if not pred.any() or not ref.any():
        return float("nan")
    return float(fn(*surface_distances(pred, ref, spacing)))


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """95th percentile of both directed surface-distance sets pooled (mm)."""
    return _distance_metric(pred, ref, spacing, lambda a, b: np.percentile(np.concatenate([a, b]), 95))


def hausdorff(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """Maximum surface distance, both directions (mm)."""
    return _distance_metric(pred, ref, spacing, lambda a, b: max(a.max(), b.max()))


def asd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """Mean distance from the prediction's surface to the reference's (mm, directed, medpy ``asd``)."""
    return _distance_metric(pred, ref, spacing, lambda a, b: a.mean())


def assd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> float:
    """Mean of both directed surface-distance sets pooled (mm)."""
    return _distance_metric(pred, ref, spacing, lambda a, b: np.concatenate([a, b]).mean())


def binary_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """All of METRIC_NAMES for one binary pair; one surface-distance computation."""
    pred, ref = _check(pred, ref, spacing)
    out = {
        "dice": dice(pred, ref),
        "jaccard": jaccard(pred, ref),
        "ravd": ravd(pred, ref),
        "precision": precision(pred, ref),
        "recall": recall(pred, ref),
    }
    if pred.any() and ref.any():
        a, b = surface_distances(pred, ref, spacing)
        out["hd95"] = float(np.percentile(np.concatenate([a, b]), 95))
        out["asd"] = float(a.mean())
    else:
        out["hd95"] = out["asd"] = 0.0 if (not pred.any() and not ref.any()) else float("nan")
    return {k: out[k] for k in METRIC_NAMES}


def multiclass_metrics(
    pred_labels: np.ndarray, ref_labels: np.ndarray, spacing: Sequence[float], labels: dict[int, str]
) -> dict[str, dict[str, float]]:
    """binary_metrics per class: {name: metrics} for each {value: name} in ``labels``."""
    return {name: binary_metrics(pred_labels == value, ref_labels == value, spacing) for value, name in labels.items()}


def summarize(per_case: Sequence[dict[str, float]]) -> dict[str, dict]:
    """NaN-aware mean, std (population) and counts per metric over cases."""
    keys = sorted({k for case in per_case for k in case})
    out = {}
    for k in keys:
        vals = np.array([case[k] for case in per_case if k in case], dtype=float)
        finite = vals[np.isfinite(vals)]
        out[k] = {
            "mean": float(finite.mean()) if finite.size else math.nan,
            "std": float(finite.std()) if finite.size else math.nan,
            "n": int(finite.size),
            "n_nan": int(vals.size - finite.size),
        }
    return out


def brier_score(probs: np.ndarray, labels: np.ndarray, value: int) -> float:
    """Brier score of one class (BMT-CTL, paper 001, Eq. 3): mean over voxels of (p_c - 1[y = c])^2.

    probs: (K, ...) class probabilities; labels: (...) int reference. 0 = perfect and certain, 1 =
    certain and wrong everywhere. Averaged over every voxel of the volume, so background-dominated
    images give small values; compare models on the same images only.
    """
    probs = np.asarray(probs)
    if probs.shape[1:] != np.asarray(labels).shape:
        raise ValueError(f"probabilities {probs.shape} do not match labels {np.asarray(labels).shape}")
    return float(np.mean((probs[value].astype(np.float64) - (np.asarray(labels) == value)) ** 2))
