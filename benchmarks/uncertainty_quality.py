"""Does the uncertainty heatmap say where the model is wrong? Calibration and error detection of a model
on its held-out LA cases (those its checkpoint lists as validation cases, never trained on).

    python benchmarks/uncertainty_quality.py [--model la] [--mc-samples 10] [--profile cpu-small] [--smoke]

Per case, with the `segment` defaults (MC dropout, the model's flip TTA), on the input grid:
* voxel Brier score and expected calibration error (15 equal-width bins of the foreground
  probability) inside a region of interest: reference or prediction dilated by 5 mm (the whole
  volume would be dominated by trivially certain background); a reliability diagram (PNG);
* overlap of uncertain voxels (entropy > 0.5 ln 2) with error voxels (prediction != reference):
  the fraction of uncertain voxels that are errors, of error voxels that are uncertain, and Dice;
* per-case scores: mean entropy and mean mutual information in the +-2 mm boundary band (report.json's),
  and summed entropy / predicted volume. Across cases: Spearman correlation of each with 1 - Dice,
  and the AUROC of each for flagging cases with Dice < 0.85 (undefined when all cases fall on one side).
Writes benchmarks/results/<profile>/uncertainty_quality.json, .md and reliability.png.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage, stats

from common import ROOT, benchmark_parser, environment, write_result

from SemiSupCardiacSegLib.checkpoint import load_model
from SemiSupCardiacSegLib.inference import predict_with_model
from SemiSupCardiacSegLib.io import read_h5_case
from SemiSupCardiacSegLib.metrics import dice
from SemiSupCardiacSegLib.reporting import segmentation_report

LA_TRAIN = ROOT.parent / "shared" / "data" / "LA2018" / "train"
N_BINS = 15
FLAG_DICE = 0.85


def roi_mask(pred: np.ndarray, ref: np.ndarray, spacing, margin_mm: float = 5.0) -> np.ndarray:
    """(pred | ref) dilated by ``margin_mm`` (Euclidean, in mm)."""
    dist = ndimage.distance_transform_edt(~(pred | ref), sampling=spacing)
    return dist <= margin_mm


def calibration_counts(prob: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin of ``prob``: count, sum of probabilities, sum of outcomes (for pooled ECE/diagram)."""
    bins = np.minimum((prob * N_BINS).astype(int), N_BINS - 1)
    count = np.bincount(bins, minlength=N_BINS).astype(float)
    psum = np.bincount(bins, weights=prob, minlength=N_BINS)
    ysum = np.bincount(bins, weights=truth.astype(float), minlength=N_BINS)
    return count, psum, ysum


def ece(count, psum, ysum) -> float:
    """Expected calibration error: sum_b (n_b / N) |mean p_b - mean y_b|."""
    n = count.sum()
    nz = count > 0
    return float(np.sum(count[nz] / n * np.abs(psum[nz] / count[nz] - ysum[nz] / count[nz])))


def auroc(scores, positives) -> float:
    """Area under the ROC curve (Mann-Whitney); NaN when one class is empty."""
    s, y = np.asarray(scores, float), np.asarray(positives, bool)
    if y.all() or (~y).all():
        return math.nan
    ranks = stats.rankdata(s)
    n1, n0 = y.sum(), (~y).sum()
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def evaluate_case(net, meta, path: Path, mc: int) -> tuple[dict, tuple]:
    image, label = read_h5_case(path)
    pred = predict_with_model(net, meta, image, mc_samples=mc, device="cpu")
    seg, ref = pred.labels.array == 1, label.array == 1
    prob = pred.foreground_probability()
    ent = pred.entropy.array
    roi = roi_mask(seg, ref, image.spacing)
    counts = calibration_counts(prob[roi], ref[roi])
    uncertain, errors = ent > 0.5 * math.log(2), seg != ref
    both = float((uncertain & errors).sum())
    structure = segmentation_report(pred, meta["labels"], meta)["structures"][meta["labels"]["1"]]
    row = {
        "dice": dice(seg, ref),
        "brier_roi": float(np.mean((prob[roi] - ref[roi]) ** 2)),
        "ece_roi": ece(*counts),
        "uncertain_that_are_errors": both / max(1.0, float(uncertain.sum())),
        "errors_that_are_uncertain": both / max(1.0, float(errors.sum())),
        "uncertain_error_dice": 2 * both / max(1.0, float(uncertain.sum() + errors.sum())),
        # The scores `segment` writes to report.json, so the chosen one can be its quality flag.
        "score_boundary_entropy": structure["mean_boundary_entropy"] or math.nan,
        "score_boundary_mi": structure["mean_boundary_mutual_info"] or math.nan,
        "score_entropy_per_volume": float(ent.sum() / max(1.0, float(seg.sum()))),
        "seconds": pred.timings["total_s"],
    }
    return row, counts


def reliability_plot(count, psum, ysum, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nz = count > 0
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.6))
    centers = (np.arange(N_BINS) + 0.5) / N_BINS
    a.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    a.plot(psum[nz] / count[nz], ysum[nz] / count[nz], "o-", color="#d62728", label="model")
    a.set_xlabel("predicted foreground probability")
    a.set_ylabel("observed foreground frequency")
    a.set_title("Reliability (ROI voxels, all cases)")
    a.legend(loc="upper left", fontsize=8)
    b.bar(centers, count / count.sum(), width=1 / N_BINS, color="#7f7f7f")
    b.set_yscale("log")
    b.set_xlabel("predicted foreground probability")
    b.set_ylabel("fraction of voxels")
    b.set_title("Confidence histogram")
    fig.tight_layout()
    from SemiSupCardiacSegLib.atomic import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = benchmark_parser(__doc__, "one case, MC 2, writes nothing (skips without data)")
    p.add_argument("--model", default="la")
    p.add_argument("--mc-samples", type=int, default=10)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    net, meta = load_model(args.model)
    names = meta["training_data"]["validation_cases"]
    paths = [LA_TRAIN / f"{n}.h5" for n in names]
    if not all(p.is_file() for p in paths):
        print(f"LA2018 held-out cases not found under {LA_TRAIN}; nothing to measure")
        return 0
    if args.smoke:
        paths, args.mc_samples = paths[:1], 2
    t0 = time.perf_counter()
    per_case, pooled = {}, np.zeros((3, N_BINS))
    for path in paths:
        per_case[path.stem], counts = evaluate_case(net, meta, path, args.mc_samples)
        pooled += np.array(counts)
    if args.smoke:
        print(per_case)
        return 0
    dices = np.array([r["dice"] for r in per_case.values()])
    scores = [k for k in next(iter(per_case.values())) if k.startswith("score_")]
    across = {}
    for k in scores:
        s = np.array([r[k] for r in per_case.values()])
        rho, pval = stats.spearmanr(s, 1 - dices)
        across[k] = {"spearman_vs_1_minus_dice": float(rho), "p_value": float(pval),
                     f"auroc_dice_below_{FLAG_DICE}": auroc(s, dices < FLAG_DICE)}
    means = {k: float(np.mean([r[k] for r in per_case.values()])) for k in next(iter(per_case.values()))}
    out_dir = ROOT / "benchmarks" / "results" / args.profile
    out_dir.mkdir(parents=True, exist_ok=True)
    reliability_plot(*pooled, out_dir / "reliability.png")
    result = {"benchmark": "uncertainty_quality", "command": "python " + " ".join(sys.argv), "environment": environment(),
              "model": {"id": meta["model_id"], "mc_samples": args.mc_samples, "tta_flip_axes": meta.get("inference", {})},
              "n_cases": len(per_case), "n_cases_below_flag": int((dices < FLAG_DICE).sum()),
              "pooled_ece_roi": ece(*pooled), "mean": means, "per_case_scores": across, "per_case": per_case,
              "wall_s": time.perf_counter() - t0}
    lines = [f"Model `{meta['model_id']}`, {len(per_case)} held-out LA cases, MC {args.mc_samples}, "
             f"{int((dices < FLAG_DICE).sum())} with Dice < {FLAG_DICE}. Plot: reliability.png", "",
             "| voxel measure (mean over cases) | value |", "|---|---|",
             f"| Dice | {means['dice']:.3f} |", f"| Brier score in ROI | {means['brier_roi']:.4f} |",
             f"| ECE in ROI (per case / pooled) | {means['ece_roi']:.4f} / {result['pooled_ece_roi']:.4f} |",
             f"| uncertain voxels that are errors | {means['uncertain_that_are_errors']:.3f} |",
             f"| error voxels that are uncertain | {means['errors_that_are_uncertain']:.3f} |",
             f"| Dice(uncertain, errors) | {means['uncertain_error_dice']:.3f} |", "",
             f"| per-case score | Spearman vs 1 - Dice | AUROC for Dice < {FLAG_DICE} |", "|---|---|---|"]
    lines += [f"| {k.removeprefix('score_')} | {v['spearman_vs_1_minus_dice']:.2f} (p {v['p_value']:.2f}) | "
              f"{v[f'auroc_dice_below_{FLAG_DICE}']:.2f} |" for k, v in across.items()]
    text = "\n".join(lines) + "\n"
    print(write_result(args.profile, "uncertainty_quality", result, text))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
