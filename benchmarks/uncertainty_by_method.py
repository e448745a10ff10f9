"""Uncertainty quality of every model of the accuracy table, side by side.

    python benchmarks/uncertainty_by_method.py --task la|cine [--mc-samples 10] [--profile cpu-small] [--smoke]

Reads ``results/<profile>/method_comparison_<task>.json`` (run ``method_comparison.py`` first) and,
for each trained run's ``model.pt``, measures on the held-out cases of that run, exactly as
``uncertainty_quality.py`` does for a shipped model (same functions; MC dropout with N samples, the
checkpoint's TTA and MC scope): pooled expected calibration error and mean Brier score in the
5 mm region of interest, Dice between uncertain voxels (entropy > 0.5 ln K) and error voxels, and
for each per-case score (boundary entropy, boundary MI, entropy per volume) the Spearman correlation
with 1 - Dice and the AUROC for flagging Dice < 0.85 (NaN where every case falls on one side).
Every network of the table has dropout (the V-Nets 0.5 before and after the decoder, the U-Nets
0.1 per block), so every method gives MC-dropout uncertainty.
Writes results/<profile>/uncertainty_by_method_<task>.json and .md, merged with the rows already
there (``plan``): a run is measured when it is on this machine and its row is missing or was measured
on other weights (model id); a row whose run is gone (runs/ does not outlive a session) is kept; a
row whose run left the accuracy table is dropped.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from common import ROOT, benchmark_parser, publish


def plan(table: dict, earlier: dict, present_ids: dict) -> tuple[dict, list]:
    """-> (rows kept as they are, keys to measure).

    table: the accuracy table's runs (key -> row); earlier: the rows already published here;
    present_ids: key -> model id of the runs whose ``model.pt`` is on this machine.
    """
    measure = [k for k in table if k in present_ids and earlier.get(k, {}).get("model_id") != present_ids[k]]
    keep = {k: v for k, v in earlier.items() if k in table and k not in measure}
    return keep, measure


def main(argv=None) -> int:
    p = benchmark_parser(__doc__, "the first run, one case, MC 2; writes nothing")
    p.add_argument("--task", choices=("la", "cine"), required=True)
    p.add_argument("--mc-samples", type=int, default=10)
    args = p.parse_args(argv)
    import torch
    from uncertainty_quality import FLAG_DICE, best_score, ece, held_out_paths, measure_model, score_quality

    from SemiSupCardiacSegLib.checkpoint import load_model

    torch.set_num_threads(args.threads)
    table = ROOT / "benchmarks" / "results" / args.profile / f"method_comparison_{args.task}.json"
    if not table.is_file():
        print(f"no accuracy table at {table}: run benchmarks/method_comparison.py --task {args.task} first")
        return 0 if args.smoke else 2
    table_runs = {k: v for k, v in json.loads(table.read_text())["results"].items() if not k.startswith("_")}
    runs = {k: v for k, v in table_runs.items() if (ROOT / v["run"] / "model.pt").is_file()}
    if not runs:
        print(
            f"none of the runs of {table.name} is on this machine (runs/bench/ is not in the repository): "
            f"run benchmarks/method_comparison.py --task {args.task} first"
        )
        return 0 if args.smoke else 2
    if args.smoke:
        runs = dict(list(runs.items())[:1])
    out = ROOT / "benchmarks" / "results" / args.profile / f"uncertainty_by_method_{args.task}.json"
    earlier = json.loads(out.read_text())["results"] if out.is_file() and not args.smoke else {}
    models = {k: load_model(ROOT / v["run"] / "model.pt") for k, v in runs.items()}
    kept, measure = plan(table_runs, earlier, {k: meta.model_id for k, (_, meta) in models.items()})
    rows = dict(kept)
    for key in measure:
        run = runs[key]
        net, meta = models[key]
        paths = held_out_paths(meta)
        if not all(path.is_file() for path in paths):
            print(f"{key}: held-out cases not found under ../shared (kept outside the repository); skipped")
            continue
        if args.smoke:
            paths, args.mc_samples = paths[:1], 2
        t = time.perf_counter()
        per_case, pooled = measure_model(net, meta, paths, args.mc_samples)
        if args.smoke:
            print({key: per_case})
            return 0
        across = score_quality(per_case)
        best = best_score(across)
        rows[key] = {
            "variant": run["variant"],
            "labeled": run["labeled"],
            "model_id": meta.model_id,
            "n_samples": len(per_case),
            "dice": float(np.mean([r["dice"] for r in per_case.values()])),
            "pooled_ece_roi": ece(*pooled),
            "brier_roi": float(np.mean([r["brier_roi"] for r in per_case.values()])),
            "uncertain_error_dice": float(np.mean([r["uncertain_error_dice"] for r in per_case.values()])),
            "scores": across,
            "best_score": best.removeprefix("score_"),
            "seconds": time.perf_counter() - t,
        }
        print(json.dumps({key: {k: rows[key][k] for k in ("dice", "pooled_ece_roi", "best_score")}}), flush=True)

    def fmt(k: str, v: dict) -> list:
        best = v["scores"]["score_" + v["best_score"]]
        return [
            k,
            f"{v['dice']:.3f}",
            f"{v['pooled_ece_roi']:.4f}",
            f"{v['brier_roi']:.4f}",
            f"{v['uncertain_error_dice']:.3f}",
            v["best_score"],
            f"{best['spearman_vs_1_minus_dice']:.2f}",
            f"{best[f'auroc_dice_below_{FLAG_DICE}']:.2f}",
        ]

    rows = {k: rows[k] for k in table_runs if k in rows}  # the accuracy table's order
    publish(
        args.profile,
        f"uncertainty_by_method_{args.task}",
        rows,
        [
            "run",
            "Dice (MC)",
            "ECE (ROI, pooled)",
            "Brier (ROI)",
            "Dice(uncertain, errors)",
            "best per-case score",
            "Spearman vs 1 - Dice",
            f"AUROC Dice < {FLAG_DICE}",
        ],
        fmt,
        extra_lines=[
            "",
            f"MC dropout with {args.mc_samples} samples and each checkpoint's TTA, on each run's held-out cases "
            "(for cine: per (case, structure) pair). Runs: method_comparison_" + args.task + ".json.",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
