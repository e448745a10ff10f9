"""Cardiac indices from short-axis segmentations (ACDC labels: 1 RV, 2 myocardium, 3 LV).

Volumes are voxel counts times the voxel volume (mm^3) / 1000 -> mL, the summation of slice
areas times slice spacing that ACDC's reference uses (no partial-volume interpolation between
slices). Ejection fraction EF = (EDV - ESV) / EDV in %. Myocardial mass = myocardial volume at end-
diastole x 1.05 g/mL (the density of muscle used by ACDC and most CMR software). Myocardial area
per slice (mm^2) = pixels of label 2 in the slice x in-plane pixel area. The slice axis is k
(array axis 2), as for ACDC NIfTI files and ``io.read_h5_case``'s cine layout.

Implausible results are flagged, not given as measurements: ED and ES segmentations that are
identical (the same frame twice), a ventricle missing from one frame (EF would read 100 % or be
undefined) make the EF ``NaN`` (written as ``null`` with its reason, ``jsonout``); an ESV above the
EDV (EF < 0 %: frames swapped?) keeps its value. Each such finding is in ``warnings`` and issued as
an ``errors.InputWarning``.

Spacing matters: ACDC h5 files store none (``io.CINE_H5_NOMINAL_SPACING_MM`` is a placeholder), so
absolute volumes and mass need the true spacing; EF is a ratio and does not depend on it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import InputError, warn

MYOCARDIAL_DENSITY_G_PER_ML = 1.05
ACDC_LABELS = {"rv": 1, "myo": 2, "lv": 3}


def structure_volume_ml(labels: np.ndarray, label: int, spacing: Sequence[float]) -> float:
    """Volume of ``label`` in mL: voxel count x voxel volume (mm^3) / 1000."""
    return float((np.asarray(labels) == label).sum()) * float(np.prod(spacing)) / 1000.0


def myocardial_area_per_slice(
    labels: np.ndarray, spacing: Sequence[float], myo: int = ACDC_LABELS["myo"]
) -> list[float]:
    """(X, Y, Z) labels -> myocardial area (mm^2) of each slice along axis 2."""
    return [float(a) * float(spacing[0]) * float(spacing[1]) for a in (np.asarray(labels) == myo).sum(axis=(0, 1))]


def ejection_fraction(edv: float, esv: float) -> float:
    """(EDV - ESV) / EDV in %; NaN when EDV is 0."""
    return float("nan") if edv <= 0 else 100.0 * (edv - esv) / edv


def cardiac_indices(
    ed: np.ndarray, es: np.ndarray, spacing: Sequence[float], labels: dict[str, int] = ACDC_LABELS
) -> dict:
    """ED and ES label maps (X, Y, Z) on the same grid of ``spacing`` mm -> indices (mL, %, g, mm^2).

    Keys: lv_edv_ml, lv_esv_ml, lv_sv_ml, lv_ef_percent, rv_edv_ml, rv_esv_ml, rv_sv_ml,
    rv_ef_percent, myo_mass_g (at ED), myo_area_mm2 {"ED": [per slice], "ES": [...]}, warnings
    (implausible findings, see the module docstring), null_reasons ({"/key": why} of NaN values).
    """
    ed, es = np.asarray(ed), np.asarray(es)
    if ed.shape != es.shape:
        raise InputError(f"ED and ES segmentations differ in shape: {ed.shape} vs {es.shape}")
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise InputError(f"spacing must be three positive numbers (mm), got {list(spacing)}")
    if not all(np.isfinite(float(s)) for s in spacing):
        raise InputError(f"spacing must be three finite numbers (mm), got {list(spacing)}")
    if not (ed == labels["lv"]).any():
        raise InputError("the end-diastolic segmentation has no left ventricle (label %d)" % labels["lv"])
    out: dict = {}
    warnings_: list[str] = []
    reasons: dict[str, str] = {}
    same = bool(np.array_equal(ed, es))
    if same:
        warnings_.append(
            "the ED and ES segmentations are identical (the same frame twice?): the ejection fractions "
            "would read 0 % and are left undefined"
        )
    full = {"lv": "left ventricle", "rv": "right ventricle"}
    for name in ("lv", "rv"):
        edv = structure_volume_ml(ed, labels[name], spacing)
        esv = structure_volume_ml(es, labels[name], spacing)
        ef = ejection_fraction(edv, esv)
        key = f"{name}_ef_percent"
        if same:
            ef, reasons[f"/{key}"] = float("nan"), "ED and ES segmentations are identical"
        elif edv == 0 and esv == 0:
            warnings_.append(f"the {full[name]} (label {labels[name]}) is missing from both frames")
            reasons[f"/{key}"] = f"the {full[name]} is missing from both frames"
        elif edv == 0:
            warnings_.append(f"the {full[name]} (label {labels[name]}) is missing from the end-diastolic frame")
            reasons[f"/{key}"] = f"the {full[name]} is missing at end-diastole"
        elif esv == 0:
            warnings_.append(
                f"the {full[name]} (label {labels[name]}) is missing from the end-systolic frame: "
                "its EF would read 100 % and is left undefined"
            )
            ef, reasons[f"/{key}"] = float("nan"), f"the {full[name]} is missing at end-systole"
        elif esv > edv:
            warnings_.append(
                f"{name.upper()} ESV {esv:.1f} mL > EDV {edv:.1f} mL: EF {ef:.1f} % is outside 0-100 % "
                "(are ED and ES swapped?)"
            )
        out.update({f"{name}_edv_ml": edv, f"{name}_esv_ml": esv, f"{name}_sv_ml": edv - esv, key: ef})
    out["myo_mass_g"] = structure_volume_ml(ed, labels["myo"], spacing) * MYOCARDIAL_DENSITY_G_PER_ML
    if out["myo_mass_g"] == 0:
        warnings_.append(f"the myocardium (label {labels['myo']}) is missing from the end-diastolic frame: mass 0 g")
    out["myo_area_mm2"] = {
        "ED": myocardial_area_per_slice(ed, spacing, labels["myo"]),
        "ES": myocardial_area_per_slice(es, spacing, labels["myo"]),
    }
    out["spacing_mm"] = [float(s) for s in spacing]
    out["warnings"] = [warn(w) for w in warnings_]
    if reasons:
        out["null_reasons"] = reasons
    return out
