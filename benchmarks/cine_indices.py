"""Ejection-fraction error of a cine model: LV and RV EF from its ED + ES segmentations against the
reference segmentations of the same frames, per patient of ACDC val.list (pairs frame01 = ED,
frame02 = ES). EF is a ratio, so the missing spacing of the .h5 files does not matter; volumes are
not reported (they would need the spacing).

    python benchmarks/cine_indices.py [--model cine] [--mc-samples 1] [--smoke]

Writes benchmarks/results/<profile>/cine_indices.json and .md.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from common import ROOT, benchmark_parser, publish

DATA = ROOT.parent / "shared" / "data" / "ACDC"


def validation_patients() -> list[str]:
    """The patients of ACDC val.list (which names frames), sorted."""
    return sorted({ln.split("_frame")[0] for ln in (DATA / "val.list").read_text().split()})


def ef_per_patient(model, meta, patients: list[str], mc_samples: int = 1, device: str = "cpu") -> dict:
    """LV and RV ejection fraction (%) of the reference and of ``model``'s segmentations, per ACDC
    validation patient (frame01 = ED, frame02 = ES of the preprocessed .h5 files)."""
    from SemiSupCardiacSegLib.cardiac import cardiac_indices
    from SemiSupCardiacSegLib.inference import InferenceSettings, Predictor
    from SemiSupCardiacSegLib.io import read_h5_case

    predictor = Predictor(model, meta, InferenceSettings.from_meta(meta, mc_samples=mc_samples, device=device))
    rows = {}
    for pat in patients:
        ref, pred = {}, {}
        for phase, frame in (("ED", "frame01"), ("ES", "frame02")):
            image, label = read_h5_case(DATA / "val" / f"{pat}_{frame}.h5")
            pred[phase] = predictor.predict(image).labels.array
            ref[phase] = label.array
        spacing = (1.0, 1.0, 1.0)  # EF is a ratio of volumes: the spacing cancels
        r, q = cardiac_indices(ref["ED"], ref["ES"], spacing), cardiac_indices(pred["ED"], pred["ES"], spacing)
        rows[pat] = {
            "lv_ef_ref": r["lv_ef_percent"],
            "lv_ef_pred": q["lv_ef_percent"],
            "rv_ef_ref": r["rv_ef_percent"],
            "rv_ef_pred": q["rv_ef_percent"],
        }
    return rows


def ef_mean_absolute_error(rows: dict) -> dict:
    """Mean absolute EF error in percentage points, {"lv": ..., "rv": ...}, over the patients of
    :func:`ef_per_patient` (NaN where a predicted ED volume is empty is skipped)."""
    return {
        side: float(np.nanmean([abs(v[f"{side}_ef_pred"] - v[f"{side}_ef_ref"]) for v in rows.values()]))
        for side in ("lv", "rv")
    }


def main(argv=None) -> int:
    p = benchmark_parser(__doc__)
    p.add_argument("--model", default="cine")
    p.add_argument("--mc-samples", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    from SemiSupCardiacSegLib.checkpoint import load_model

    torch.set_num_threads(args.threads)
    if not (DATA / "val.list").is_file():
        print(f"ACDC data not found at {DATA} (kept outside the repository); nothing to measure", file=sys.stderr)
        return 0 if args.smoke else 2
    model, meta = load_model(args.model)
    patients = validation_patients()
    if args.smoke:
        patients = patients[:1]
    t0 = time.perf_counter()
    rows = ef_per_patient(model, meta, patients, mc_samples=args.mc_samples)
    if args.smoke:
        print(rows)
        return 0
    mae = ef_mean_absolute_error(rows)
    rows["mean absolute error"] = {
        "lv_ef_ref": float("nan"),
        "lv_ef_pred": mae["lv"],
        "rv_ef_ref": float("nan"),
        "rv_ef_pred": mae["rv"],
        "wall_s": time.perf_counter() - t0,
    }
    publish(
        args.profile,
        "cine_indices",
        rows,
        ["patient", "LV EF ref %", "LV EF model %", "RV EF ref %", "RV EF model %"],
        lambda k, v: (
            [k]
            + [
                ("-" if np.isnan(v[c]) else f"{v[c]:.1f}")
                for c in ("lv_ef_ref", "lv_ef_pred", "rv_ef_ref", "rv_ef_pred")
            ]
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
