"""Pseudo-labels for self-training: a trained model's segmentations of unlabeled cases, kept only
where its own quality flag trusts them.

Self-training (a teacher labels the unlabeled images, a student learns from labeled + pseudo-labeled
ones; e.g. Yang et al., "ST++", CVPR 2022, which also drops the teacher's least reliable images)
is the simplest use of unlabeled data, and it composes with every method of ``methods/``: the
pseudo-labeled cases enter a training as labeled cases (config ``pseudo_labels``, see
``training.split_cases``). Choices, stated here because the reference does them otherwise:

* the teacher's label map is ``segment``'s (MC dropout + the checkpoint's TTA + largest-component
  cleanup), i.e. hard labels of the ensemble mean, not the teacher's single deterministic pass;
* a case is dropped when a structure of the model is missing from it (a frame with no LV is a
  failed frame), and then either (default) when the model's quality flag (``reporting.quality_flag``,
  the per-structure score and threshold chosen in ``benchmarks/uncertainty_quality.py``) marks any
  structure doubtful, or, with ``keep_fraction`` f, unless it is among the f most reliable cases,
  ranked by their least reliable structure's quality score (ST++ keeps the most reliable half; it
  ranks by the stability of the teacher's checkpoints, where the quality score is the project's
  calibrated per-case reliability and needs no extra checkpoints);
* no voxel-level confidence mask: the student's losses (Dice + CE, SDM MSE) see the whole map.

Only the *image* of an input case is read: a case file that also holds a reference label (the ACDC
training ``.h5`` files do) never lets it through. Outputs (``out_dir``): ``NAME.h5`` in the input's
``.h5`` layout, or ``NAME.nrrd`` + ``NAME_label.nrrd`` for other formats, and ``pseudo_labels.json``
(teacher id, settings, per-case scores, kept or why not). The folder is written as one set, all or
nothing (``atomic.atomic_folder``, the manifest its completion mark): the cases and the manifest
go into a temporary folder beside it and are moved into place together, so an interrupted or
failed run (Ctrl-C, a full disk, a bad case) leaves the folder as it was, and a folder never holds
cases of two runs (with ``overwrite`` the earlier run's cases go with its manifest: a case the new
run drops is not left behind for a training to pick up). An existing manifest is never replaced
unless ``overwrite``; the output folder must not be a folder an input case lives in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .atomic import atomic_folder, atomic_write_text
from .data.datasets import CaseFile
from .dependencies import import_optional
from .errors import InputError
from .inference import InferenceSettings, Predictor
from .io import file_suffix, h5_layout, read_volume, write_h5_case, write_volume
from .jsonout import dumps as json_dumps
from .model_meta import ModelMeta
from .reporting import segmentation_report

MANIFEST = "pseudo_labels.json"


def _problems(report: dict) -> tuple[list[str], list[str]]:
    """(structures missing from the segmentation, structures the quality flag marks doubtful)."""
    structures = report["structures"].items()
    return [n for n, s in structures if s["volume_ml"] == 0], [n for n, s in structures if s["doubtful"]]


def _worst_score(report: dict, score: str) -> float:
    """The case's least reliable structure's quality score (higher = less reliable)."""
    return max(float(s[score]) for s in report["structures"].values())


def _write_case(case: CaseFile, image, labels: np.ndarray, out: Path, overwrite: bool) -> list[Path]:
    if file_suffix(case.image) in (".h5", ".hdf5"):
        h5py = import_optional("h5py", f"reading {Path(case.image).name}")
        with h5py.File(case.image, "r") as f:  # keep the input's storage layout
            layout = h5_layout(f["image"].shape)
        return [write_h5_case(out / f"{case.name}.h5", image.array, labels, layout=layout, overwrite=overwrite)]
    return [
        write_volume(image, out / f"{case.name}.nrrd", overwrite=overwrite),
        write_volume(image.with_array(labels.astype(np.uint8)), out / f"{case.name}_label.nrrd", overwrite=overwrite),
    ]


def pseudo_label_cases(
    model: torch.nn.Module,
    meta: ModelMeta,
    cases: Sequence[CaseFile],
    out_dir: str | Path,
    mc_samples: int = 10,
    keep_doubtful: bool = False,
    keep_fraction: float | None = None,
    overwrite: bool = False,
    device: str = "auto",
    progress: Callable[[float], None] | None = None,
) -> dict:
    """Segment ``cases`` with the teacher ``model`` and write the trusted results as labeled cases.

    keep_doubtful: keep every case with all structures present. keep_fraction (0, 1]: keep the
    ``ceil(f * n)`` most reliable of the n cases with all structures present instead of applying the
    flag (needs the model's ``quality`` score). Segmentations are held in memory until all cases are
    ranked. Returns the manifest written to ``out_dir/pseudo_labels.json``: {"teacher": {...},
    "mc_samples", "keep_doubtful", "keep_fraction", "n_kept", "cases": {name: {"kept": bool,
    "reason": str | None, "structures": {name: {"volume_ml", "entropy_per_volume", "doubtful"}}}}}.
    """
    out = Path(out_dir)
    if not cases:
        raise InputError("no cases to pseudo-label")
    if keep_fraction is not None:
        if not 0 < keep_fraction <= 1:
            raise InputError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
        if meta.quality is None:
            raise InputError("keep_fraction ranks cases by the model's quality score, and this model has none")
    sources = {Path(c.image).resolve().parent for c in cases}
    if out.resolve() in sources:
        raise InputError(f"{out} holds input cases; write pseudo-labels to another folder")
    if (out / MANIFEST).exists() and not overwrite:
        raise InputError(f"{out} already holds {MANIFEST}; choose another folder or pass --overwrite")
    predictor = Predictor(model, meta, InferenceSettings.from_meta(meta, mc_samples=mc_samples, device=device))
    earlier = _earlier_cases(out)
    with atomic_folder(
        out, overwrite=overwrite, owned=lambda name: name == MANIFEST or _case_name(name) in earlier, marker=MANIFEST
    ) as tmp:
        return _pseudo_label_into(predictor, cases, tmp, keep_doubtful, keep_fraction, progress)


def _case_name(file_name: str) -> str:
    """The case a pseudo-label file belongs to: NAME.h5, NAME.nrrd, NAME_label.nrrd -> NAME."""
    stem = file_name.split(".")[0]
    return stem[: -len("_label")] if stem.endswith("_label") else stem


def _earlier_cases(out: Path) -> set[str]:
    """Case names the folder's earlier manifest lists (its own files: replaced with it)."""
    try:
        return set(json.loads((out / MANIFEST).read_text())["cases"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _pseudo_label_into(predictor: Predictor, cases, out: Path, keep_doubtful, keep_fraction, progress) -> dict:
    """``pseudo_label_cases``' work, written into the (temporary, empty) folder ``out``."""
    meta = predictor.meta
    overwrite = True  # ``out`` is the set's own temporary folder
    records: dict[str, dict] = {}
    held: dict[str, tuple] = {}  # keep_fraction: (case, image, labels, worst score) until all are ranked
    for i, case in enumerate(cases):
        image = read_volume(case.image)  # the image only: a reference label in the file is never read
        # (its file name is in every InputError it raises: a truncated .h5 among the cases is named)
        pred = predictor.predict(image)
        report = segmentation_report(pred, meta)
        missing, doubtful = _problems(report)
        reason = (
            "missing: " + ", ".join(missing) if missing else "doubtful: " + ", ".join(doubtful) if doubtful else None
        )
        records[case.name] = {
            "kept": False,
            "reason": reason,
            "structures": {
                n: {k: s[k] for k in ("volume_ml", "entropy_per_volume", "doubtful")}
                for n, s in report["structures"].items()
            },
        }
        if not missing and keep_fraction is not None:
            held[case.name] = (case, image, pred.labels.array, _worst_score(report, meta.quality.score))
        elif not missing and (not doubtful or keep_doubtful):
            _write_case(case, image, pred.labels.array, out, overwrite)
            records[case.name]["kept"] = True
        if progress is not None:
            progress((i + 1) / len(cases))
    if held:
        n_keep = int(np.ceil(keep_fraction * len(held)))
        ranked = sorted(held, key=lambda name: held[name][3])
        for rank, name in enumerate(ranked):
            records[name]["worst_score"] = held[name][3]
            if rank < n_keep:
                _write_case(*held[name][:3], out, overwrite)
                records[name].update(kept=True, reason=None)
            else:
                records[name]["reason"] = f"not among the {n_keep} most reliable"
    manifest = {
        "teacher": {
            "id": meta.model_id,
            "path": meta.path,
            "method": meta.method,
            "quality": None if meta.quality is None else meta.quality.to_dict(),
        },
        "mc_samples": predictor.settings.mc_samples,
        "keep_doubtful": bool(keep_doubtful),
        "keep_fraction": keep_fraction,
        "n_cases": len(records),
        "n_kept": sum(r["kept"] for r in records.values()),
        "cases": records,
    }
    atomic_write_text(out / MANIFEST, json_dumps(manifest, indent=2), overwrite=True)
    return manifest
