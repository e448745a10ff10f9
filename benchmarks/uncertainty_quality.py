"""Does the uncertainty heatmap say where the model is wrong? Calibration and error detection of a model
on its held-out cases (those its checkpoint lists as validation cases, never trained on): LA2018
cases for the LA model, ACDC frames for the cine model, per structure (RV, myocardium, LV).

    python benchmarks/uncertainty_quality.py [--model la|cine|PATH] [--mc-samples 10] [--mc-scope decoder|head]
                                             [--unused-labels] [--folds K] [--profile cpu-small]
                                             [--out-dir DIR] [--smoke]

Per case and structure, with the `segment` defaults (MC dropout, the model's TTA), on the input grid:
* voxel Brier score and expected calibration error (15 equal-width bins of the foreground
  probability) inside a region of interest: reference or prediction dilated by 5 mm (the whole
  volume would be dominated by trivially certain background); a reliability diagram (PNG);
* overlap of uncertain voxels (entropy > 0.5 ln 2) with error voxels (prediction != reference):
  the fraction of uncertain voxels that are errors, of error voxels that are uncertain, and Dice;
* per-case scores (report.json's, computable without a reference): mean entropy and mean mutual
  information in the +-2 mm boundary band, and the entropy summed within 5 mm of the predicted
  structure per predicted voxel (``entropy_per_volume``). Across cases: Spearman correlation of each with 1 - Dice,
  and the AUROC of each for flagging cases with Dice < 0.85 (undefined when all cases fall on one side);
  for the best-correlated score, the threshold with the highest Youden index (a candidate for the
  checkpoint's quality flag, chosen on the same cases it is judged on).
For a multi-class model each (case, structure) pair is one sample; probabilities are one-vs-rest.

``--unused-labels`` adds the training cases whose labels no stage of this model read: its unlabeled
cases (the training source's cases that its checkpoint lists neither as labeled, pseudo-labeled nor
validation). Their images were seen without labels, so the model's Dice there may be a little
optimistic, but the labels are as unseen as the held-out ones. ``--folds K`` then chooses the
score and the flag's threshold by K-fold cross-validation over all measured cases (``cross_validate``):
on K - 1 folds, the score with the highest Spearman correlation with 1 - Dice and the largest
threshold that flags every case below Dice 0.85 there (``flag_all_threshold``); on the fold left
out, which chose nothing, that score's Spearman and what the threshold flags. With ``--folds`` the
suggested flag follows the same rule on all measured cases (without it: the Youden threshold).
Writes uncertainty_quality[_<model>].json, .md and reliability[_<model>].png into benchmarks/results/<profile>/
(or --out-dir: a recipe's quality stage).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
from common import ROOT, benchmark_parser, environment, write_result
from scipy import ndimage, stats

from SemiSupCardiacSegLib.checkpoint import load_model
from SemiSupCardiacSegLib.inference import InferenceSettings, Predictor
from SemiSupCardiacSegLib.io import read_h5_case
from SemiSupCardiacSegLib.metrics import dice
from SemiSupCardiacSegLib.reporting import segmentation_report

LA_TRAIN = ROOT.parent / "shared" / "data" / "LA2018" / "train"
ACDC = ROOT.parent / "shared" / "data" / "ACDC"
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


def evaluate_case(net, meta, path: Path, mc: int, mc_scope: str | None = None) -> tuple[dict, tuple]:
    """Rows per structure ({structure: measures}) of one held-out case, and its pooled calibration counts
    (mc_scope None: the checkpoint's)."""
    image, label = read_h5_case(path)
    settings = InferenceSettings.from_meta(meta, mc_samples=mc, device="cpu", mc_scope=mc_scope)
    pred = Predictor(net, meta, settings).predict(image)
    ent = pred.entropy.array
    report = segmentation_report(pred, meta)["structures"]
    k = meta.num_classes
    uncertain = ent > 0.5 * math.log(k)
    rows, pooled = {}, np.zeros((3, N_BINS))
    for c in range(1, k):
        name = meta.labels[c]
        seg, ref, prob = pred.labels.array == c, label.array == c, pred.probabilities.array[c]
        roi = roi_mask(seg, ref, image.spacing)
        counts = calibration_counts(prob[roi], ref[roi])
        pooled += np.array(counts)
        errors = seg != ref
        both = float((uncertain & errors & roi).sum())
        unc_roi, err_roi = float((uncertain & roi).sum()), float((errors & roi).sum())
        structure = report[name]
        rows[name] = {
            "dice": dice(seg, ref),
            "brier_roi": float(np.mean((prob[roi] - ref[roi]) ** 2)),
            "ece_roi": ece(*counts),
            "uncertain_that_are_errors": both / max(1.0, unc_roi),
            "errors_that_are_uncertain": both / max(1.0, err_roi),
            "uncertain_error_dice": 2 * both / max(1.0, unc_roi + err_roi),
            # The scores `segment` writes to report.json, so the chosen one can be its quality flag.
            "score_boundary_entropy": _or_nan(structure["mean_boundary_entropy"]),
            "score_boundary_mi": _or_nan(structure["mean_boundary_mutual_info"]),
            "score_entropy_per_volume": _or_nan(structure["entropy_per_volume"]),
            "seconds": pred.timings.total_s,
        }
    return rows, tuple(pooled)


def measure_model(net, meta, paths: list[Path], mc: int, mc_scope: str | None = None) -> tuple[dict, np.ndarray]:
    """``evaluate_case`` over ``paths`` -> ({case or case/structure: measures}, pooled calibration counts
    (3, N_BINS))."""
    per_case, pooled = {}, np.zeros((3, N_BINS))
    for path in paths:
        rows, counts = evaluate_case(net, meta, path, mc, mc_scope)
        multi = len(rows) > 1
        for structure, row in rows.items():
            per_case[f"{path.stem}/{structure}" if multi else path.stem] = row
        pooled += np.array(counts)
    return per_case, pooled


def _or_nan(score: float | None) -> float:
    """A report score, NaN where the structure was predicted empty (None)."""
    return math.nan if score is None else float(score)


def best_score(across: dict) -> str:
    """The score with the highest Spearman correlation with 1 - Dice (NaN counts as lowest)."""
    return max(
        across,
        key=lambda k: (
            -math.inf if math.isnan(across[k]["spearman_vs_1_minus_dice"]) else across[k]["spearman_vs_1_minus_dice"]
        ),
    )


def score_quality(per_case: dict) -> dict:
    """Per per-case score (``score_*``): Spearman with 1 - Dice (and its p-value) and the AUROC for
    flagging Dice < FLAG_DICE, over the cases that have the score: a structure predicted empty has
    none (NaN; ``segment`` leaves its flag unset), and one such case would make both NaN.
    ``n_scored``: the cases counted."""
    dices = np.array([r["dice"] for r in per_case.values()])
    across = {}
    for k in [k for k in next(iter(per_case.values())) if k.startswith("score_")]:
        s = np.array([r[k] for r in per_case.values()], float)
        ok = np.isfinite(s)
        rho, pval = stats.spearmanr(s[ok], 1 - dices[ok]) if ok.sum() > 2 else (math.nan, math.nan)
        across[k] = {
            "spearman_vs_1_minus_dice": float(rho),
            "p_value": float(pval),
            "n_scored": int(ok.sum()),
            f"auroc_dice_below_{FLAG_DICE}": auroc(s[ok], dices[ok] < FLAG_DICE),
        }
    return across


def youden_threshold(scores, positives) -> dict:
    """The score threshold (flag when score > t) with the highest sensitivity + specificity - 1."""
    s, y = np.asarray(scores, float), np.asarray(positives, bool)
    best = {"threshold": math.nan, "youden": -1.0}
    for t in np.unique(s):
        flag = s > t
        sens = (flag & y).sum() / max(1, y.sum())
        spec = (~flag & ~y).sum() / max(1, (~y).sum())
        if sens + spec - 1 > best["youden"]:
            best = {
                "threshold": float(t),
                "youden": float(sens + spec - 1),
                "flagged": int(flag.sum()),
                "flagged_below": int((flag & y).sum()),
                "below": int(y.sum()),
            }
    return best


def flag_all_threshold(scores, positives) -> float:
    """The largest t with score > t for every positive (a case below FLAG_DICE): just under the lowest
    positive's score; NaN without positives."""
    s, y = np.asarray(scores, float), np.asarray(positives, bool)
    if not y.any():
        return math.nan
    return float(np.nextafter(s[y].min(), -np.inf))


def cross_validate(per_case: dict, folds: int, seed: int = 0) -> dict:
    """K-fold choice of the per-case score and the flag's threshold (see the module docstring).
    Samples are split by case (a case's structures stay in one fold). Returns the per-fold choices
    and results, the mean out-of-fold Spearman, and the out-of-fold flags pooled over folds."""
    keys = list(per_case)
    cases = sorted({k.split("/")[0] for k in keys})
    if folds < 2 or folds > len(cases):
        raise SystemExit(f"--folds must be in [2, {len(cases)}] (the number of cases), got {folds}")
    rng = np.random.default_rng(seed)
    fold_of = {c: i % folds for i, c in enumerate(rng.permutation(cases))}
    rows = []
    flagged = np.zeros(len(keys), bool)
    for f in range(folds):
        train = {k: per_case[k] for k in keys if fold_of[k.split("/")[0]] != f}
        test = {k: per_case[k] for k in keys if fold_of[k.split("/")[0]] == f}
        score = best_score(score_quality(train))
        t = flag_all_threshold([r[score] for r in train.values()], [r["dice"] < FLAG_DICE for r in train.values()])
        s_test = np.array([r[score] for r in test.values()], float)
        d_test = np.array([r["dice"] for r in test.values()])
        ok = np.isfinite(s_test)
        rho = float(stats.spearmanr(s_test[ok], 1 - d_test[ok])[0]) if ok.sum() > 2 else math.nan
        flags = ~ok | (s_test > t)  # a structure predicted empty is always suspect
        for k, flag in zip(test, flags):
            flagged[keys.index(k)] = flag
        rows.append(
            {
                "fold": f,
                "n_test": len(test),
                "score": score.removeprefix("score_"),
                "threshold": t,
                "spearman_test": rho,
                "below_test": int((d_test < FLAG_DICE).sum()),
                "flagged_test": int(flags.sum()),
                "flagged_below_test": int((flags & (d_test < FLAG_DICE)).sum()),
            }
        )
    dices = np.array([per_case[k]["dice"] for k in keys])
    below = dices < FLAG_DICE
    return {
        "folds": folds,
        "seed": seed,
        "per_fold": rows,
        "mean_spearman_test": float(np.nanmean([r["spearman_test"] for r in rows])),
        "n_below": int(below.sum()),
        "n_flagged": int(flagged.sum()),
        "n_below_flagged": int((flagged & below).sum()),
        "out_of_fold_flags": {k: bool(v) for k, v in zip(keys, flagged)},
        "fold_of": {c: int(f) for c, f in fold_of.items()},
    }


def unused_label_paths(meta) -> list[Path]:
    """The training cases whose labels the model never read: the cases of its training source that
    its checkpoint lists neither as labeled, pseudo-labeled nor validation cases."""
    from SemiSupCardiacSegLib.data import find_cases

    td = meta.training_data
    used = set(td.get("labeled_cases", [])) | set(td.get("pseudo_labeled_cases", [])) | set(td["validation_cases"])
    sources = td.get("source") or []
    sources = [sources] if isinstance(sources, str) else sources
    missing = [s for s in sources if not Path(s).exists()]
    if not sources or missing:
        raise SystemExit(f"--unused-labels: the model's training source {missing or sources} is not here")
    return [Path(c.image) for s in sources for c in find_cases(s) if c.name not in used]


def held_out_paths(meta) -> list[Path]:
    """The files of the checkpoint's validation cases (LA2018 train/, ACDC train/ or val/)."""
    names = meta.training_data["validation_cases"]
    roots = [LA_TRAIN, ACDC / "train", ACDC / "val"]
    return [next((r / f"{n}.h5" for r in roots if (r / f"{n}.h5").is_file()), LA_TRAIN / f"{n}.h5") for n in names]


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


def scatter_plot(per_case: dict, scores: list[str], out: Path) -> None:
    """Each per-case score against Dice (one point per case or (case, structure) pair)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scores), figsize=(3.6 * len(scores), 3.3), squeeze=False)
    dices = np.array([r["dice"] for r in per_case.values()])
    for ax, k in zip(axes[0], scores):
        ax.scatter([r[k] for r in per_case.values()], dices, s=14, color="#1f77b4")
        ax.axhline(FLAG_DICE, color="k", ls="--", lw=0.8)
        ax.set_xlabel(k.removeprefix("score_").replace("_", " "))
        ax.set_ylabel("Dice")
    fig.tight_layout()
    from SemiSupCardiacSegLib.atomic import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = benchmark_parser(__doc__, "one case, MC 2, writes nothing (skips without data)")
    p.add_argument("--model", default="la")
    p.add_argument("--mc-samples", type=int, default=10)
    p.add_argument(
        "--mc-scope",
        choices=("decoder", "head"),
        help="MC-dropout scope (default: the checkpoint's); given, it is added to the result's name",
    )
    p.add_argument("--out-dir", type=Path, help="folder to write into (default: results/<profile>/)")
    p.add_argument(
        "--unused-labels", action="store_true", help="also the training cases whose labels the model never read"
    )
    p.add_argument("--folds", type=int, default=0, help="choose the score and threshold by K-fold cross-validation")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    net, meta = load_model(args.model)
    paths = held_out_paths(meta)
    if not all(p.is_file() for p in paths):
        print(
            "the model's held-out cases were not found under ../shared (kept outside the repository); "
            "nothing to measure"
        )
        return 0
    n_held_out = len(paths)
    if args.unused_labels:
        paths = paths + unused_label_paths(meta)
    if args.smoke:
        paths, args.mc_samples = paths[:1], 2
    t0 = time.perf_counter()
    per_case, pooled = measure_model(net, meta, paths, args.mc_samples, args.mc_scope)
    if args.smoke:
        print(per_case)
        return 0
    dices = np.array([r["dice"] for r in per_case.values()])
    scores = [k for k in next(iter(per_case.values())) if k.startswith("score_")]
    across = score_quality(per_case)
    best = best_score(across)
    best_scores = [r[best] for r in per_case.values()]
    suggestion = {"score": best.removeprefix("score_"), **youden_threshold(best_scores, dices < FLAG_DICE)}
    if args.folds:  # the rule the cross-validation judges: flag every case below FLAG_DICE
        t = flag_all_threshold(best_scores, dices < FLAG_DICE)
        flag = np.asarray(best_scores) > t
        suggestion = {
            "score": best.removeprefix("score_"),
            "threshold": t,
            "rule": f"just under the lowest score of a case below {FLAG_DICE}",
            "flagged": int(flag.sum()),
            "flagged_below": int((flag & (dices < FLAG_DICE)).sum()),
            "below": int((dices < FLAG_DICE).sum()),
        }
    means = {k: float(np.mean([r[k] for r in per_case.values()])) for k in next(iter(per_case.values()))}
    suffix = ("" if str(args.model) == "la" else "_" + Path(str(args.model)).stem) + (
        f"_mc_{args.mc_scope}" if args.mc_scope else ""
    )
    cv = cross_validate(per_case, args.folds) if args.folds else None
    scope = args.mc_scope or meta.inference.mc_scope
    out_dir = args.out_dir or ROOT / "benchmarks" / "results" / args.profile
    out_dir.mkdir(parents=True, exist_ok=True)
    reliability_plot(*pooled, out_dir / f"reliability{suffix}.png")
    scatter_plot(per_case, scores, out_dir / f"uncertainty_vs_dice{suffix}.png")
    result = {
        "benchmark": f"uncertainty_quality{suffix}",
        "command": "python " + " ".join(sys.argv),
        "environment": environment(),
        "model": {
            "id": meta.model_id,
            "mc_samples": args.mc_samples,
            "mc_scope": scope,
            "inference": meta.inference.to_dict(),
        },
        "n_cases": len(paths),
        "n_held_out": n_held_out,
        "n_unused_labels": len(paths) - n_held_out,
        "n_samples": len(per_case),
        "n_samples_below_flag": int((dices < FLAG_DICE).sum()),
        "pooled_ece_roi": ece(*pooled),
        "mean": means,
        "per_case_scores": across,
        "suggested_flag": suggestion,
        "cross_validation": cv,
        "per_case": per_case,
        "wall_s": time.perf_counter() - t0,
    }
    unit = "(case, structure) pairs" if len(per_case) > len(paths) else "cases"
    lines = [
        f"Model `{meta.model_id}`, {n_held_out} held-out cases"
        + (f" + {len(paths) - n_held_out} whose labels it never read" if len(paths) > n_held_out else "")
        + f" ({len(per_case)} {unit}), "
        f"MC {args.mc_samples} ({scope} scope), {int((dices < FLAG_DICE).sum())} with Dice < {FLAG_DICE}. "
        f"Plots: reliability{suffix}.png, uncertainty_vs_dice{suffix}.png",
        "",
        "| voxel measure (mean) | value |",
        "|---|---|",
        f"| Dice | {means['dice']:.3f} |",
        f"| Brier score in ROI | {means['brier_roi']:.4f} |",
        f"| ECE in ROI (per sample / pooled) | {means['ece_roi']:.4f} / {result['pooled_ece_roi']:.4f} |",
        f"| uncertain voxels that are errors | {means['uncertain_that_are_errors']:.3f} |",
        f"| error voxels that are uncertain | {means['errors_that_are_uncertain']:.3f} |",
        f"| Dice(uncertain, errors) | {means['uncertain_error_dice']:.3f} |",
        "",
        f"| per-case score | Spearman vs 1 - Dice | AUROC for Dice < {FLAG_DICE} |",
        "|---|---|---|",
    ]
    lines += [
        f"| {k.removeprefix('score_')} | {v['spearman_vs_1_minus_dice']:.2f} (p {v['p_value']:.2f}) | "
        f"{v[f'auroc_dice_below_{FLAG_DICE}']:.2f} |"
        for k, v in across.items()
    ]
    if suggestion.get("flagged") is not None:
        lines += [
            "",
            f"Suggested quality flag: {suggestion['score']} > {suggestion['threshold']:.3f} ("
            + (f"Youden {suggestion['youden']:.2f}" if "youden" in suggestion else suggestion["rule"])
            + f"; flags {suggestion['flagged']}, of which {suggestion['flagged_below']} "
            f"of the {suggestion['below']} below {FLAG_DICE}).",
        ]
    if cv is not None:
        lines += [
            "",
            f"Cross-validated choice ({cv['folds']} folds by case; each fold judged by what the others chose):",
            "",
            f"| fold | cases | score chosen | threshold | Spearman on the fold | below {FLAG_DICE} | flagged | "
            "of them below |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['fold']} | {r['n_test']} | {r['score']} | {r['threshold']:.3f} | {r['spearman_test']:.2f} | "
            f"{r['below_test']} | {r['flagged_test']} | {r['flagged_below_test']} |"
            for r in cv["per_fold"]
        ]
        lines += [
            "",
            f"Mean Spearman on the folds that chose nothing: {cv['mean_spearman_test']:.2f}; out of fold, "
            f"{cv['n_below_flagged']} of the {cv['n_below']} cases below {FLAG_DICE} are flagged, "
            f"{cv['n_flagged']} flagged in all.",
        ]
    text = "\n".join(lines) + "\n"
    print(write_result(args.profile, f"uncertainty_quality{suffix}", result, text, out_dir))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
