"""Synthetic short-axis cine phantoms (LV blood pool, myocardial ring, RV crescent) in the ACDC layouts.

A phantom is one patient at two phases, end-diastole (ED) and end-systole (ES), each a stack of
short-axis slices on a grid of ``spacing`` mm (in-plane 1.5 mm, 8 mm apart by default, like ACDC):

* LV blood pool (label 3): a disc whose radius falls from base (slice 0) to apex as
  ``R sqrt(1 - (z / L)^2)``; at ES it shrinks to ``es_scale`` (0.72) of its ED radius, so the
  ejection fraction is about 1 - 0.72^2 (a little higher with the apex retreating);
* myocardium (label 2): a ring around the LV, 7 mm thick at ED, thickening at ES so that its
  volume is nearly conserved (as in the heart: the muscle does not shrink), closed at the apex;
* RV blood pool (label 1): a crescent, the part of a larger disc beside the LV that lies outside
  the LV and myocardium, present from the base down to 70 % of the LV length, smaller at ES;
* blood 1.0, myocardium 0.3, surrounding tissue 0.5 with texture, dark lungs, Rician noise.

``write_acdc_patient`` writes what a user downloads from ACDC:
``patientXXX/patientXXX_frameYY.nii.gz`` + ``_gt.nii.gz`` for the ED and ES frames and
``Info.cfg`` (``ED: n``, ``ES: n``, ``Group``, ``Height``, ``NbFrame``, ``Weight``); the voxel spacing
lives in the NIfTI headers. ``write_acdc_h5`` writes the SSL4MIS layout instead (``image``
(slices, H, W) min-max scaled to [0, 1], ``label`` uint8), without spacing, as in ../shared/data/ACDC.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .atomic import atomic_write_text
from .volume import Volume

CINE_LABELS = {1: "right ventricle", 2: "myocardium", 3: "left ventricle"}


@dataclass
class CinePhantom:
    """image: float32 (X, Y, Z) with Z the slice axis; label: uint8 (X, Y, Z) 0 bg, 1 RV, 2 Myo, 3 LV."""

    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]


def make_cine_phantom(
    seed: int = 0,
    phase: str = "ED",
    shape=(128, 128, 10),
    spacing=(1.5, 1.5, 8.0),
    es_scale: float = 0.72,
    noise_std: float = 0.06,
) -> CinePhantom:
    """One phase of one synthetic patient (the same ``seed`` gives the same patient at ED and ES)."""
    if phase not in ("ED", "ES"):
        raise ValueError(f"phase must be 'ED' or 'ES', got {phase!r}")
    rng = np.random.default_rng(seed)  # patient-level draws: identical for ED and ES
    shape = tuple(int(s) for s in shape)
    sp = np.asarray(spacing, float)
    extent = np.asarray(shape) * sp
    x = (np.arange(shape[0]) + 0.5) * sp[0]
    y = (np.arange(shape[1]) + 0.5) * sp[1]
    X, Y = np.meshgrid(x, y, indexing="ij")
    centre = extent[:2] / 2 + rng.uniform(-8, 8, 2)
    r_lv = rng.uniform(24.0, 28.0)  # ED basal LV radius, mm
    wall = rng.uniform(6.5, 8.0)  # ED wall thickness, mm
    length = extent[2] * rng.uniform(0.85, 0.95)  # base-to-apex, mm
    rv_angle = rng.uniform(np.pi * 0.85, np.pi * 1.15)
    rv_scale = rng.uniform(1.15, 1.3)
    tissue = 0.5 + 0.08 * ndimage.gaussian_filter(rng.standard_normal(shape[:2]), 4.0)
    noise_rng = np.random.default_rng([seed, 0 if phase == "ED" else 1])

    s = 1.0 if phase == "ED" else es_scale
    label = np.zeros(shape, np.uint8)
    for k in range(shape[2]):
        z = (k + 0.5) * sp[2]
        z_lv = length if phase == "ED" else length * (0.5 * (1 + es_scale) + 0.02)  # apex retreats a little at ES
        taper = np.sqrt(max(0.0, 1.0 - (z / z_lv) ** 2))
        taper_myo = np.sqrt(max(0.0, 1.0 - (z / (z_lv + wall)) ** 2))
        r_in = s * r_lv * taper
        # Myocardial volume is (nearly) conserved: outer radius from the ED ring area.
        ed_in, ed_out = r_lv * taper, (r_lv + wall) * taper_myo
        r_out = np.sqrt(max(r_in**2 + (ed_out**2 - ed_in**2), 0.0)) if ed_out > 0 else 0.0
        d = np.hypot(X - centre[0], Y - centre[1])
        lv = d <= r_in
        myo = (d <= r_out) & ~lv
        rv = np.zeros_like(lv)
        if z <= 0.7 * length:
            r_rv = rv_scale * r_out * (1.0 if phase == "ED" else 0.85)
            c_rv = centre + (r_out * 0.9) * np.array([np.cos(rv_angle), np.sin(rv_angle)])
            rv = (np.hypot(X - c_rv[0], Y - c_rv[1]) <= r_rv) & (d > r_out + 1.0)
        label[..., k][rv] = 1
        label[..., k][myo] = 2
        label[..., k][lv] = 3

    image = np.repeat(tissue[..., None], shape[2], axis=2).astype(np.float32)
    lungs = np.hypot((X - extent[0] * 0.15) / 25.0, (Y - extent[1] * 0.5) / 45.0) <= 1
    image[lungs] = 0.08
    image[(label == 1) | (label == 3)] = 1.0
    image[label == 2] = 0.3
    image = ndimage.gaussian_filter(image, (0.7, 0.7, 0))
    n1 = noise_rng.normal(0, noise_std, shape)
    n2 = noise_rng.normal(0, noise_std, shape)
    image = np.sqrt((image + n1) ** 2 + n2**2).astype(np.float32)
    return CinePhantom(image, label, tuple(float(v) for v in sp))


def write_acdc_patient(
    root: str | os.PathLike,
    patient: int,
    seed: int | None = None,
    ed_frame: int = 1,
    es_frame: int = 12,
    nb_frames: int = 30,
    **kw,
) -> Path:
    """Write ``root/patientXXX/`` in the original ACDC layout (NIfTI + Info.cfg); returns the folder."""
    from .io import write_volume

    folder = Path(root) / f"patient{patient:03d}"
    folder.mkdir(parents=True, exist_ok=True)
    seed = patient if seed is None else seed
    for phase, frame in (("ED", ed_frame), ("ES", es_frame)):
        ph = make_cine_phantom(seed, phase, **kw)
        stem = folder / f"patient{patient:03d}_frame{frame:02d}"
        # Intensities as a scanner would store them (positive integers), not normalized.
        write_volume(Volume(np.round(ph.image * 400).astype(np.int16), spacing=ph.spacing), f"{stem}.nii.gz")
        write_volume(Volume(ph.label, spacing=ph.spacing), f"{stem}_gt.nii.gz")
    atomic_write_text(
        folder / "Info.cfg",
        f"ED: {ed_frame}\nES: {es_frame}\nGroup: NOR\nHeight: 175.0\nNbFrame: {nb_frames}\nWeight: 70.0\n",
    )
    return folder


def write_acdc_h5(phantom: CinePhantom, path: str | os.PathLike) -> Path:
    """Write the SSL4MIS/../shared ACDC layout: image (slices, H, W) in [0, 1], label uint8, gzip."""
    from .io import write_h5_case

    img = (phantom.image - phantom.image.min()) / (phantom.image.max() - phantom.image.min())
    return write_h5_case(path, img, phantom.label, layout="slices_first", overwrite=True)
