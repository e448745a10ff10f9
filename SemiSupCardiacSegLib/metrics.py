"""Segmentation metrics (placeholder with dice only; the full module is being written)."""
import numpy as np


def dice(pred, ref) -> float:
    pred = np.asarray(pred, bool)
    ref = np.asarray(ref, bool)
    s = pred.sum() + ref.sum()
    return 1.0 if s == 0 else float(2.0 * (pred & ref).sum() / s)
