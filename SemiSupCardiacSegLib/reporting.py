"""Turn a Prediction into files and a report: NRRD outputs on the input grid, report.json, numbers.

Outputs (all on the input's grid, geometry copied from the input):
    segmentation.nrrd       uint8 labels (0 background, model's label values)
    probability.nrrd        float32 foreground probability (binary models: p(class 1);
                            multi-class: 1 - p(background))
    distance.nrrd           float32 normalized SDM of class 1 (negative inside, [-1, 1]);
                            multi-class: the minimum over foreground classes
    uncertainty.nrrd        float32 predictive entropy, nats (MC dropout when N > 1)
    mutual_information.nrrd float32 MI (epistemic part), nats
    report.json             volumes (mL), boundary-band uncertainty, quality flag, timings, model id
The set is written all or nothing (``write_outputs``: into a temporary folder, then moved into
place); an existing set is never replaced unless ``overwrite=True``.

Compact outputs (``compact=True``, ``segment --compact``; what the Slicer module's background job
asks for, so the files it loads stay small and fast to read): the four float maps are stored as
uint8 codes over their known range (probability [0, 1], SDM [-1, 1], entropy and MI [0, ln K]),
value = offset + scale * code, with scale and offset recorded in report.json under "stored";
``read_output_map`` turns them back into float32. The step is (range)/255: 0.0039 in probability,
0.0078 in SDM, 0.0027 nats of entropy for 2 classes - below what the maps are read for.

Quality flag: a checkpoint may carry ``quality = {"score": "mean_boundary_mutual_info", "threshold": t,
"min_mc_samples": n, ...}`` (``model_meta.QualityRule``), chosen by ``benchmarks/uncertainty_quality.py``
on held-out cases; it is judged against the ``InferenceSettings`` the prediction was made with.
A structure is flagged ``doubtful`` when its score exceeds t; with fewer MC samples than the
threshold was set with (MI needs dropout sampling) the flag is ``null`` (not assessed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from .atomic import atomic_folder, atomic_write_text, is_complete_set
from .errors import InputError
from .inference import InferenceSettings, Prediction
from .io import write_volume
from .jsonout import dumps as json_dumps
from .model_meta import ModelMeta, QualityRule

#: gzip level of the output NRRDs: 1, the fastest. The float maps of a crop hold little redundancy,
#: those of a localized full field of view mostly zeros. Measured side by side (5 NRRDs, 1 thread on a
#: shared 2-core VM): a 183x141x88 LA case 1.46 s / 37.4 MB at level 1, 2.65 s / 32.2 MB at ITK's
#: default, 0.44 s / 38.6 MB uncompressed; the same case in a 576x576x88 field 7.1 s / 76.5 MB,
#: 9.2 s / 64.4 MB, 6.6 s / 496 MB. ``benchmarks/inference_speed.py`` keeps the table.
OUTPUT_COMPRESSION_LEVEL = 1

OUTPUT_FILES = (
    "segmentation.nrrd",
    "probability.nrrd",
    "distance.nrrd",
    "uncertainty.nrrd",
    "mutual_information.nrrd",
    "report.json",
)


def _box_around(mask: np.ndarray, spacing: np.ndarray, margin_mm: float) -> tuple[slice, ...]:
    """The mask's bounding box grown by ``margin_mm`` (plus one voxel), clipped to the volume: every
    voxel within ``margin_mm`` of the mask lies inside it, so distance transforms can run there."""
    grow = np.ceil(margin_mm / spacing).astype(int) + 1
    idx = np.nonzero(mask)
    return tuple(
        slice(max(0, int(i.min()) - g), min(n, int(i.max()) + g + 1)) for i, g, n in zip(idx, grow, mask.shape)
    )


def boundary_band(mask: np.ndarray, spacing, width_mm: float = 2.0) -> np.ndarray:
    """Voxels within ``width_mm`` (mm, physical) of the mask's surface, on both sides. Empty mask -> empty band.

    Computed in the mask's bounding box grown by the width (exact: nothing farther can be in the band)."""
    mask = mask.astype(bool)
    out = np.zeros_like(mask)
    if not mask.any() or mask.all():
        return out
    sp = np.array([float(s) for s in spacing])
    box = _box_around(mask, sp, width_mm)
    sub = mask[box]
    d_out = ndimage.distance_transform_edt(~sub, sampling=tuple(sp))  # outside voxels: distance to the mask
    d_in = ndimage.distance_transform_edt(sub, sampling=tuple(sp))  # inside voxels: distance to background
    out[box] = ((~sub) & (d_out <= width_mm)) | (sub & (d_in <= width_mm))
    return out


#: Margin (mm) around a structure within which ``entropy_per_volume`` sums the entropy.
NEAR_MM = 5.0


def near_region(mask: np.ndarray, spacing, margin_mm: float = NEAR_MM) -> np.ndarray:
    """The mask and every voxel within ``margin_mm`` (mm) of it, computed in the mask's bounding box
    grown by the margin (cheap for a small structure in a large volume). Empty mask -> empty."""
    mask = mask.astype(bool)
    out = np.zeros_like(mask)
    if not mask.any():
        return out
    sp = np.array([float(x) for x in spacing])
    box = _box_around(mask, sp, margin_mm)
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=tuple(sp)) <= margin_mm
    return out


def quality_flag(structure: dict, quality: QualityRule | None, settings: InferenceSettings) -> bool | None:
    """True when the structure's quality score exceeds the model's threshold; None if not assessable:
    too few MC samples, or MC dropout of another scope than the threshold was chosen with
    (``quality.mc_scope``: head-only MC gives other uncertainty values)."""
    if quality is None or settings.mc_samples < quality.min_mc_samples:
        return None
    if settings.mc_scope != quality.mc_scope:
        return None
    score = structure.get(quality.score)
    if score is None:  # empty structure: nothing to judge by uncertainty
        return None
    return bool(score > quality.threshold)


def segmentation_report(pred: Prediction, meta: ModelMeta, band_mm: float = 2.0) -> dict:
    """Per-structure volume (mL) and mean uncertainty in a +-band_mm boundary band; timings and the
    settings that produced them (``timings_s``); model id."""
    vox_ml = pred.labels.voxel_volume_ml()
    structures = {}
    for value, name in sorted(meta.labels.items()):
        mask = pred.labels.array == value
        band = boundary_band(mask, pred.labels.spacing, band_mm)
        near = near_region(mask, pred.labels.spacing, NEAR_MM)
        structures[name] = {
            "label": value,
            "volume_ml": float(mask.sum() * vox_ml),
            "boundary_band_mm": band_mm,
            "mean_boundary_entropy": float(pred.entropy.array[band].mean()) if band.any() else None,
            "mean_boundary_mutual_info": float(pred.mutual_info.array[band].mean()) if band.any() else None,
            # entropy (nats) summed within NEAR_MM of the structure, per voxel of the structure
            "entropy_per_volume": float(pred.entropy.array[near].sum() / mask.sum()) if mask.any() else None,
        }
        structures[name]["doubtful"] = quality_flag(structures[name], meta.quality, pred.settings)
    timings = {**pred.timings.to_dict(), "device": pred.device, **pred.settings.report()}
    if pred.roi_box is not None:
        timings["roi_box"] = [[b.start, b.stop] for b in pred.roi_box]
    return {
        "structures": structures,
        "mean_entropy": float(pred.entropy.array.mean()),
        "timings_s": timings,
        # the coarse localization's decision (the crop segmented, or why the whole volume was); None: not run
        "localization": None if pred.localization is None else pred.localization.report(),
        "model": {"id": meta.model_id, "path": meta.path, "method": meta.method, "iteration": meta.iteration},
        "grid": {"shape": list(pred.labels.shape), "spacing_mm": pred.labels.spacing.tolist()},
        # what reading the input assumed (a spacing the file does not store, a guessed layout): io
        "assumptions": list(getattr(pred.labels, "assumptions", []) or []),
    }


def _quantized(volume, lo: float, hi: float):
    """(uint8 Volume of codes, {"dtype", "scale", "offset"}) for values in [lo, hi] (clipped)."""
    scale = (hi - lo) / 255.0
    codes = np.rint((np.clip(volume.array, lo, hi) - lo) / scale).astype(np.uint8)
    return volume.with_array(codes), {"dtype": "uint8", "scale": scale, "offset": lo}


#: Every entry a ``segment`` output folder may hold (``segment --montage`` adds montage.png, ``--es``
#: the es/ folder): what ``atomic_folder`` treats as the set's own when it replaces an earlier set.
SEGMENT_SET = OUTPUT_FILES + ("montage.png", "es")


def write_output_files(
    pred: Prediction,
    report: dict,
    folder: str | Path,
    compact: bool = False,
    compression_level: int = OUTPUT_COMPRESSION_LEVEL,
) -> list[Path]:
    """Write the NRRD outputs and report.json into ``folder`` (created if missing; existing files are
    replaced): the raw writer, meant for the temporary folder of ``atomic_folder``.
    compression_level: gzip level of every NRRD, 1..9, -1 ITK's default, 0 uncompressed."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    max_nats = float(np.log(pred.probabilities.channels))
    maps = [("probability.nrrd", pred.foreground_probability(), 0.0, 1.0)]
    if pred.sdm is not None:
        maps.append(("distance.nrrd", pred.foreground_sdm(), -1.0, 1.0))
    maps += [
        ("uncertainty.nrrd", pred.entropy, 0.0, max_nats),
        ("mutual_information.nrrd", pred.mutual_info, 0.0, max_nats),
    ]
    level = {"compress": compression_level != 0, "compression_level": compression_level or -1}
    paths = [write_volume(pred.labels, out / "segmentation.nrrd", overwrite=True, **level)]
    stored = {}
    for name, volume, lo, hi in maps:
        if compact:
            volume, stored[name] = _quantized(volume, lo, hi)
        paths.append(write_volume(volume, out / name, overwrite=True, **level))
    if stored:
        report = {**report, "stored": stored}
    atomic_write_text(out / "report.json", json_dumps(report, indent=2), overwrite=True)
    paths.append(out / "report.json")
    return paths


def write_outputs(
    pred: Prediction, report: dict, out_dir: str | Path, overwrite: bool = False, compact: bool = False
) -> list[Path]:
    """Write the NRRD outputs and report.json into ``out_dir`` as one set, all or nothing
    (``atomic.atomic_folder``: written beside it, then moved into place; an interrupted or failed
    write leaves ``out_dir`` as it was). A folder that already holds a complete set (its report.json)
    is refused unless ``overwrite``, and then replaced whole.

    compact: store the float maps as uint8 codes (see the module docstring; ``read_output_map``)."""
    out = Path(out_dir)
    if not overwrite and is_complete_set(out):
        raise InputError(
            f"{out} already holds segmentation outputs (report.json); choose another --out or pass --overwrite"
        )
    with atomic_folder(out, overwrite=overwrite, owned=SEGMENT_SET.__contains__) as tmp:
        written = write_output_files(pred, report, tmp, compact=compact)
    return [out / p.name for p in written]


def read_output_map(out_dir: str | Path, name: str, report: dict | None = None):
    """A float map written by ``write_outputs`` (``name`` e.g. 'uncertainty.nrrd') as a float32 Volume,
    decoding compact uint8 files with the scale and offset of report.json."""
    from .io import read_volume

    out = Path(out_dir)
    if report is None:
        report = json.loads((out / "report.json").read_text())
    volume = read_volume(out / name)
    code = report.get("stored", {}).get(name)
    if code is None:
        return volume.with_array(volume.array.astype(np.float32))
    return volume.with_array((code["offset"] + code["scale"] * volume.array.astype(np.float32)).astype(np.float32))
