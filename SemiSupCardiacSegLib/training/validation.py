"""Validation Dice of a network on held-out cases, post-processed as the shipped segmentation is."""

from __future__ import annotations

import numpy as np
import torch

from ..data import Case
from ..inference import InferenceSettings, labels_from_probs, predict_model_space
from ..metrics import dice


def predict_labels(
    model: torch.nn.Module, image: np.ndarray, patch_size, num_classes: int, device, overlap: float
) -> np.ndarray:
    """(X, Y, Z) labels of a model-space ``image``: sliding-window softmax (one pass), argmax, then per
    class the connected component of largest probability mass (inference's post-processing)."""
    settings = InferenceSettings(tuple(patch_size), overlap=overlap, mc_samples=1, window_batch=2, device=str(device))
    return labels_from_probs(predict_model_space(model, image, settings).probs, num_classes)


def validate(
    model: torch.nn.Module, cases: list[Case], patch_size, num_classes: int, device, overlap: float = 0.5
) -> dict:
    """-> {"dice": mean over cases of the mean foreground Dice, "per_case": {name: Dice}}, in model space."""
    per_case = {}
    for case in cases:
        pred = predict_labels(model, case.image, patch_size, num_classes, device, overlap)
        per_case[case.name] = float(np.mean([dice(pred == c, case.label == c) for c in range(1, num_classes)]))
    return {"dice": float(np.mean(list(per_case.values()))) if per_case else float("nan"), "per_case": per_case}
