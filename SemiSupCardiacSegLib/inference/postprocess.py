"""Label maps from probabilities: argmax, then the largest connected component per class."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def largest_component(mask: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Keep the largest 26-connected component of a binary mask (empty stays empty); with ``weight``
    (same shape, e.g. the class probability) the component of largest total weight."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask.astype(bool)
    sizes = ndimage.sum_labels(np.ones_like(lab) if weight is None else weight, lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def keep_largest_per_class(labels: np.ndarray, num_classes: int, probs: np.ndarray | None = None) -> np.ndarray:
    """Largest-connected-component cleanup for every foreground class of a label map; with
    ``probs`` (K, ...) each class keeps its component of largest probability mass instead of the
    most voxels (a confident structure over a larger doubtful one)."""
    out = np.zeros_like(labels)
    for c in range(1, num_classes):
        out[largest_component(labels == c, None if probs is None else probs[c])] = c
    return out


def labels_from_probs(probs: np.ndarray, num_classes: int, postprocess: bool = True) -> np.ndarray:
    """uint8 labels (...) from probabilities (K, ...): argmax, then with ``postprocess`` keep, per class,
    the connected component of largest probability mass (not the most voxels: a confident structure
    wins over a larger doubtful one, e.g. a stomach blob taken for the RV; on 40 ACDC and 12 LA
    training cases whose labels the models never used both rules pick the same component
    everywhere, so the rule was chosen on principle; see models/acdc_bmtctl.md)."""
    labels = np.argmax(probs, axis=0).astype(np.uint8)
    return keep_largest_per_class(labels, num_classes, probs) if postprocess else labels
