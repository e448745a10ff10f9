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
from pathlib import Path

import numpy as np

from common import ROOT, benchmark_parser, publish

DATA = ROOT.parent / "shared" / "data" / "ACDC"


def main(argv=None) -> int:
    p = benchmark_parser(__doc__)
    p.add_argument("--model", default="cine")
    p.add_argument("--mc-samples", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    from SemiSupCardiacSegLib.cardiac import cardiac_indices
    from SemiSupCardiacSegLib.checkpoint import load_model
    from SemiSupCardiacSegLib.inference import predict_with_model
    from SemiSupCardiacSegLib.io import read_h5_case

    torch.set_num_threads(args.threads)
    if not (DATA / "val.list").is_file():
        print(f"ACDC data not found at {DATA} (kept outside the repository); nothing to measure", file=sys.stderr)
        return 0 if args.smoke else 2
    model, meta = load_model(args.model)
    patients = sorted({ln.split("_frame")[0] for ln in (DATA / "val.list").read_text().split()})
    if args.smoke:
        patients = patients[:1]
    rows = {}
    t0 = time.perf_counter()
    for pat in patients:
        ref, pred = {}, {}
        for phase, frame in (("ED", "frame01"), ("ES", "frame02")):
            image, label = read_h5_case(DATA / "val" / f"{pat}_{frame}.h5")
            pred[phase] = predict_with_model(model, meta, image, mc_samples=args.mc_samples, device="cpu").labels.array
            ref[phase] = label.array
        spacing = (1.0, 1.0, 1.0)  # EF does not depend on it
        r, q = cardiac_indices(ref["ED"], ref["ES"], spacing), cardiac_indices(pred["ED"], pred["ES"], spacing)
        rows[pat] = {"lv_ef_ref": r["lv_ef_percent"], "lv_ef_pred": q["lv_ef_percent"], "rv_ef_ref": r["rv_ef_percent"],
                     "rv_ef_pred": q["rv_ef_percent"]}
    if args.smoke:
        print(rows)
        return 0
    lv = np.array([abs(v["lv_ef_pred"] - v["lv_ef_ref"]) for v in rows.values()])
    rv = np.array([abs(v["rv_ef_pred"] - v["rv_ef_ref"]) for v in rows.values()])
    rows["mean absolute error"] = {"lv_ef_ref": float("nan"), "lv_ef_pred": float(np.nanmean(lv)),
                                   "rv_ef_ref": float("nan"), "rv_ef_pred": float(np.nanmean(rv)), "wall_s": time.perf_counter() - t0}
    publish(args.profile, "cine_indices", rows, ["patient", "LV EF ref %", "LV EF model %", "RV EF ref %", "RV EF model %"],
            lambda k, v: [k] + [("-" if np.isnan(v[c]) else f"{v[c]:.1f}") for c in ("lv_ef_ref", "lv_ef_pred", "rv_ef_ref", "rv_ef_pred")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
