"""Held-out evaluation of a model on labeled cases: the one implementation behind the ``evaluate``
command, the Slicer module's old-vs-new comparison after fine-tuning and the benchmarks."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from .data.datasets import CaseFile
from .errors import InputError
from .inference import InferenceSettings, Predictor
from .io import (
    CINE_H5_NOMINAL_SPACING_MM,
    check_label_values,
    file_suffix,
    read_h5_case,
    read_image_info,
    read_label,
    read_volume,
)
from .metrics import binary_metrics, brier_score, summarize
from .model_meta import ModelMeta


def check_case_pair(case: CaseFile, num_classes: int, labels: dict[int, str] | None = None) -> None:
    """Refuse a case whose label cannot be scored against its image, naming the file: a label on
    another grid (shape, spacing, origin, direction) or with values outside 0..num_classes-1 (the
    label convention training refuses too, ``io.check_label_values``: a 0/255 mask is not Dice 0)."""
    from pathlib import Path

    if file_suffix(case.image) in (".h5", ".hdf5"):
        _, label = read_h5_case(case.image)  # refuses a label of another shape than the image
        check_label_values(label.array, num_classes, Path(case.image).name, labels)
        return
    image = read_image_info(case.image)
    label = read_label(case.label)
    name = Path(case.label).name
    if label.shape != image.shape:
        raise InputError(
            f"{name}: label shape {label.shape} differs from the shape {image.shape} of its image "
            f"{Path(case.image).name}"
        )
    if not label.same_grid(image):
        raise InputError(
            f"{name}: label is not on the grid of its image {Path(case.image).name} (spacing, origin or "
            "direction differ)"
        )
    check_label_values(label.array, num_classes, name, labels)


def evaluate_cases(
    model: torch.nn.Module,
    meta: ModelMeta,
    cases: Sequence[CaseFile],
    mc_samples: int = 1,
    tta: bool = True,
    overlap: float = 0.5,
    device: str = "auto",
    progress: Callable[[float], None] | None = None,
) -> dict:
    """Per-case and mean metrics (Dice, Jaccard, HD95, ASD, RAVD, precision, recall, Brier) per structure.

    cases: labeled ``CaseFile``s (image + label files). Distances are in mm, except for cine .h5 files,
    which store no spacing: then in voxels ("distance_unit": "voxel", SSL4MIS's convention).
    Returns {"n_cases", "distance_unit", "mc_samples", "tta_flip_axes", "mean": {structure: {metric:
    {"mean", "std", ...}}}, "per_case": {case: {structure: {metric: value}, "seconds": s}}}.
    """
    cases = [c for c in cases if c.label is not None]
    if not cases:
        raise InputError("no labeled cases to evaluate on")
    k = meta.num_classes
    for case in cases:  # every label checked before any inference: a bad one fails in seconds
        check_case_pair(case, k, meta.labels)
    names = [meta.labels.get(c, str(c)) for c in range(1, k)]
    settings = InferenceSettings.from_meta(meta, tta=tta, mc_samples=mc_samples, overlap=overlap, device=device)
    predictor = Predictor(model, meta, settings)
    per_case: dict[str, dict] = {}
    nominal = False
    for i, case in enumerate(cases):
        if file_suffix(case.image) in (".h5", ".hdf5"):
            image, label = read_h5_case(case.image)
            nominal |= bool(np.allclose(image.spacing, CINE_H5_NOMINAL_SPACING_MM))  # LA .h5 is read at 0.625 mm
        else:
            image, label = read_volume(case.image), read_label(case.label)
        pred = predictor.predict(image)
        per_case[case.name] = {
            names[c - 1]: {
                **binary_metrics(pred.labels.array == c, label.array == c, image.spacing),
                "brier": brier_score(pred.probabilities.array, label.array, c),
            }
            for c in range(1, k)
        }
        per_case[case.name]["seconds"] = pred.timings.total_s
        if progress is not None:
            progress((i + 1) / len(cases))
    mean = {n: summarize([per_case[c][n] for c in per_case]) for n in names}
    return {
        "n_cases": len(per_case),
        "distance_unit": "voxel" if nominal else "mm",
        "mc_samples": settings.mc_samples,
        "tta_flip_axes": list(settings.flip_axes),
        "tta_rot90": settings.rot90,
        "deterministic_mask": settings.separate_mask_passes,
        "mean": mean,
        "per_case": per_case,
    }
