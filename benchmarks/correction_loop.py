"""What each correction buys: the segment - correct - fine-tune loop, simulated on real LA cases.

    python benchmarks/correction_loop.py [--scenario in-domain|new-scanner] [--ks 1,2,4,8] [--draws 3]
                                         [--modes semi,sup] [--iterations 300] [--max-rows N] [--threads 2]
                                         [--suggest-found] [--selections suggest,random0,...]

A simulated user corrects K cases of a pool; the correction is the reference label. Scenarios:
* ``in-domain``: the shipped LA model's own protocol. Pool: its training cases whose labels it
  never read (the training source minus its labeled, pseudo-labeled and validation cases); scored
  on its 12 held-out (validation) cases.
* ``new-scanner``: the same cases as a clinical protocol would acquire them (``shift_case``, fixed):
  resampled to 1.25 x 1.25 x 2.5 mm (Gaussian anti-aliasing, linear; the label by the 0.5 level of
  its linear interpolation), intensities mapped through the 1-99 % range to [0, 1], gamma 1.6, a
  smooth multiplicative bias field exp(0.35 b), b a fixed quadratic in the normalized coordinates,
  Rician-like noise (sigma 0.04 of the range) and scaled to 0-1000; scored on the shifted held-out
  cases on their own grid.

For K in ``--ks``, the K cases are chosen by ``suggest``'s ranking (the model's per-case
uncertainty score, ``suggest.rank_cases``; with ``--suggest-found`` also that ranking without the
cases where the model found no structure of at least ``FOUND_ML``) and at random (``--draws`` draws; draw d is a fixed
permutation of the pool, K its first K, so the random sets are nested in K as a user's would be).
Each set is fine-tuned from the shipped model by the module's own path (``jobs.fine_tune_config``
and ``Training/train.py``, as **Fine-tune on library** runs them, ``--iterations`` long) on a
library holding the K corrected cases and either the rest of the pool unlabeled (``semi``: the
model's semi-supervised method) or nothing else (``sup``: supervised on the K alone). One change
from the module: all K cases train (the module holds the last one out when K >= 3, to compare old
and new; here the held-out cases do that). Measured per fine-tune: held-out Dice and HD95 (mm),
wall time, the correction effort (voxels the user changed: prediction XOR reference, summed
over the K) and the base model's Dice on the K picked cases. Per scenario: the base model's
held-out Dice; for ``new-scanner`` the share of the shift's Dice loss won back,
(Dice_K - Dice_shifted) / (Dice_in-domain - Dice_shifted). Also what the heatmap saves the
reviewer, on the pool cases: the share of wrong voxels (prediction != reference) that lie in the
first 1, 3 and 5 regions of "Next uncertain region" (``uncertain_regions.rank_uncertain_regions``),
and the share of the volume those regions cover.

Also per fine-tune, what holding the model near what it knew would give: the held-out Dice of the
weight average (1 - lam) * base + lam * fine-tuned for lam in ``AVERAGE_LAMBDAS`` (every float
tensor of the state dict, batch-norm statistics included; WiSE-FT, Wortsman et al., CVPR 2022, whose
default lam = 0.5 is the one fixed here before looking; lam = 1 is the fine-tuned model itself).

Each fine-tune is one row of benchmarks/results/<profile>/correction_loop.json, written when it
ends; a rerun skips rows already there (same iterations), and ``--max-rows`` stops after N new
rows, so the grid is filled over several sessions. Several calls may run at once (one per core,
say, on different ``--ks`` or ``--modes``): a call claims a row before its fine-tune (a claim file in
the row's folder, made under a lock on the JSON) and merges its row into the JSON on disk under that
lock, so no call redoes or overwrites another's row (POSIX ``fcntl`` locks). Real data is read from ../shared and never
copied into the repository (the cases are written as NRRD under runs/bench/correction_loop/).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from common import ROOT, benchmark_parser, environment, locked, write_result
from scipy import ndimage

from SemiSupCardiacSegLib.adaptation import ADAPT_BATCHES, adapt_model
from SemiSupCardiacSegLib.atomic import atomic_write_text
from SemiSupCardiacSegLib.checkpoint import load_model, resolve_model_path
from SemiSupCardiacSegLib.data import find_cases
from SemiSupCardiacSegLib.data.datasets import CaseFile
from SemiSupCardiacSegLib.evaluation import evaluate_cases
from SemiSupCardiacSegLib.inference import InferenceSettings, Predictor
from SemiSupCardiacSegLib.io import read_h5_case, read_label, read_volume, write_volume
from SemiSupCardiacSegLib.jobs import FINE_TUNE_AVERAGE, FINE_TUNE_ITERATIONS, fine_tune_command, fine_tune_config
from SemiSupCardiacSegLib.metrics import dice
from SemiSupCardiacSegLib.reporting import segmentation_report
from SemiSupCardiacSegLib.suggest import rank_cases
from SemiSupCardiacSegLib.training.callbacks import averaged_with
from SemiSupCardiacSegLib.uncertain_regions import rank_uncertain_regions
from SemiSupCardiacSegLib.volume import Volume

LA = ROOT.parent / "shared" / "data" / "LA2018"
WORK = ROOT / "runs" / "bench" / "correction_loop"
NAME = "correction_loop"
SHIFT_SPACING = (1.25, 1.25, 2.5)
REGIONS = (1, 3, 5)
AVERAGE_LAMBDAS = (0.25, 0.5, 0.75)
#: The grid's fine-tune length (``--iterations``' default; the plot shows these rows): the module's
#: own (*Fine-tune iterations*), set to 300 by this benchmark's 1000-iteration rows (``jobs``).
GRID_ITERATIONS = FINE_TUNE_ITERATIONS
HEATMAP_FIELDS = (("wrong_share", "wrong_share_in_regions"), ("volume_share", "volume_share_of_regions"))


def shift_case(image: Volume, label: Volume, name: str) -> tuple[Volume, Volume]:
    """The new-scanner version of a case (the module docstring's fixed transform). Noise is seeded
    by the case name, so every run makes the same volumes."""
    factors = np.asarray(image.spacing) / np.asarray(SHIFT_SPACING)  # < 1: fewer voxels
    sigma = np.maximum(0.0, (1.0 / factors - 1.0) / 2.0)  # anti-aliasing (voxels of the input grid)
    smooth = ndimage.gaussian_filter(image.array.astype(np.float32), sigma)
    img = ndimage.zoom(smooth, factors, order=1, grid_mode=True, mode="nearest")
    lab = ndimage.zoom(label.array.astype(np.float32), factors, order=1, grid_mode=True, mode="nearest") > 0.5
    lo, hi = np.percentile(img, [1, 99])
    x = np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0) ** 1.6
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in x.shape], indexing="ij")
    bias = 0.5 * grid[0] ** 2 - 0.3 * grid[1] + 0.4 * grid[0] * grid[2] - 0.2 * grid[2] ** 2
    x = x * np.exp(0.35 * bias)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    x = np.hypot(x + rng.normal(0, 0.04, x.shape), rng.normal(0, 0.04, x.shape))  # magnitude noise
    spacing = np.asarray(SHIFT_SPACING)
    origin = image.origin + (spacing - image.spacing) / 2.0  # same physical extent's centre
    out = Volume((1000.0 * x).astype(np.float32), spacing, origin, image.direction)
    return out, out.with_array(lab.astype(np.uint8))


def materialize(scenario: str, names: list[str]) -> dict[str, CaseFile]:
    """Each case as NAME.nrrd + NAME_label.nrrd under WORK/<scenario>/cases/ (made once)."""
    folder = WORK / scenario / "cases"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        img_path, lab_path = folder / f"{name}.nrrd", folder / f"{name}_label.nrrd"
        if not (img_path.is_file() and lab_path.is_file()):
            image, label = read_h5_case(LA / "train" / f"{name}.h5", spacing=(0.625, 0.625, 0.625))
            if scenario == "new-scanner":
                image, label = shift_case(image, label, name)
            write_volume(label.with_array(label.array.astype(np.uint8)), lab_path, overwrite=True)
            write_volume(image, img_path, overwrite=True)
        out[name] = CaseFile(name, img_path, lab_path)
    return out


def pool_and_held_out(meta) -> tuple[list[str], list[str]]:
    """(pool: training cases whose labels the model never read, held-out: its validation cases)."""
    td = meta.training_data
    used = set(td.get("labeled_cases", [])) | set(td.get("pseudo_labeled_cases", [])) | set(td["validation_cases"])
    names = [c.name for c in find_cases(LA / "train.list")]
    return [n for n in names if n not in used], list(td["validation_cases"])


def score_pool(net, meta, cases: dict[str, CaseFile], mc: int) -> dict[str, dict]:
    """Per pool case: report (suggest's score), the base model's Dice, the voxels a correction
    changes, and the heatmap's share of the wrong voxels in the first regions."""
    settings = InferenceSettings.from_meta(meta, mc_samples=mc, device="cpu")
    predictor = Predictor(net, meta, settings)
    rows = {}
    for name, case in cases.items():
        image, ref = read_volume(case.image), read_label(case.label).array > 0
        pred = predictor.predict(image)
        seg = pred.labels.array > 0
        wrong = seg != ref
        regions = rank_uncertain_regions(pred.entropy, meta.num_classes, max_regions=max(REGIONS))
        comps, _ = ndimage.label(pred.entropy.array > 0.5 * math.log(meta.num_classes), structure=np.ones((3, 3, 3)))
        ids = [comps[r.centre_index] for r in regions]
        share, cover = {}, {}
        for n in REGIONS:
            inside = np.isin(comps, ids[:n]) if ids else np.zeros_like(wrong)
            share[str(n)] = float((wrong & inside).sum() / max(1, wrong.sum()))  # str: JSON keys
            cover[str(n)] = float(inside.mean())
        rows[name] = {
            "report": segmentation_report(pred, meta),
            "dice": dice(seg, ref),
            "effort_voxels": int(wrong.sum()),
            "wrong_share_in_regions": share,
            "volume_share_of_regions": cover,
        }
    return rows


#: ``suggest_found``: suggest's ranking over the cases in which the model found every structure with
#: at least this volume (mL; a left atrium is never smaller): the complete failures left out.
FOUND_ML = 5.0


def pool_scores(net, meta, scenario: str, cases: dict[str, CaseFile], mc: int, smoke: bool) -> dict[str, dict]:
    """``score_pool`` of ``meta``'s model on the scenario's pool, kept in WORK per model id and MC
    count (the smoke run keeps nothing)."""
    path = WORK / scenario / f"pool_scores_{meta.model_id}_mc{mc}.json"
    if path.is_file() and not smoke:
        return json.loads(path.read_text())
    scored = score_pool(net, meta, cases, mc)
    if not smoke:
        atomic_write_text(path, json.dumps(scored))
    return scored


def chosen(selection: str, k: int, pool: list[str], scored: dict, score_name: str) -> list[str]:
    if selection in ("suggest", "suggest_found"):
        rows = [{"case": n, "input": "", "out": "", "report": scored[n]["report"]} for n in pool]
        if selection == "suggest_found":
            rows = [r for r in rows if all(st["volume_ml"] >= FOUND_ML for st in r["report"]["structures"].values())]
        return [s.case for s in rank_cases(rows, score_name)[:k]]
    draw = int(selection.removeprefix("random"))
    return [pool[i] for i in np.random.default_rng(1000 + draw).permutation(len(pool))[:k]]


def library_for(row_dir: Path, cases: dict[str, CaseFile], labeled: list[str], unlabeled: list[str]) -> Path:
    """A training library as the module writes it: links to NAME.nrrd (+ NAME_label.nrrd if corrected)."""
    lib = row_dir / "library"
    lib.mkdir(parents=True, exist_ok=True)
    for name in labeled + unlabeled:
        for src, dst in [(cases[name].image, lib / f"{name}.nrrd")] + (
            [(cases[name].label, lib / f"{name}_label.nrrd")] if name in labeled else []
        ):
            if not dst.exists():
                dst.symlink_to(Path(src).resolve())
    return lib


def row_dir_for(scenario: str, selection: str, k: int, mode: str, iterations: int, start: str = "shipped") -> Path:
    """The working folder of one fine-tune row (its library and its run)."""
    suffix = "" if start == "shipped" else f"_from_{start}"
    return WORK / scenario / "rows" / f"{selection}_K{k}_{mode}_{iterations}{suffix}"


def adapted_start(model_path: Path, meta, scenario: str, cases: dict[str, CaseFile], pool: list[str], smoke: bool):
    """The shipped model adapted to the scenario's pool images (``adaptation``, no label read), made
    once per model: (network, metadata, checkpoint path, seconds it took or None when reused)."""
    path = WORK / scenario / (f"adapted_{meta.model_id}.pt" if not smoke else "adapted_smoke.pt")
    seconds = None
    if smoke or not path.is_file():
        t0 = time.perf_counter()
        adapt_model(model_path, [cases[n] for n in pool], path, batches=2 if smoke else ADAPT_BATCHES, overwrite=True)
        seconds = time.perf_counter() - t0
    net, meta = load_model(path)
    return net, meta, path, seconds


def read_result(path: Path) -> dict:
    result = json.loads(path.read_text()) if path.is_file() else {}
    result.setdefault("rows", {})
    result.setdefault("base", {})
    return result


def claim_row(path: Path, row_id: str, row_dir: Path) -> bool:
    """Claim a row for this call: False where the JSON on disk has it or a live call claimed it."""
    claim = row_dir / "claimed_by_pid"
    with locked(path):
        if row_id in read_result(path)["rows"]:
            return False
        if claim.is_file():
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.kill(int(claim.read_text()), 0)  # raises where that call is gone
                if int(claim.read_text()) != os.getpid():
                    return False
        row_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(claim, str(os.getpid()))
    return True


def merged(path: Path, update) -> dict:
    """Apply ``update(result)`` to the JSON on disk under the lock, write it back, return it."""
    with locked(path):
        result = read_result(path)
        update(result)
        result.update(benchmark=NAME, command="python " + " ".join(sys.argv), environment=environment())
        write_result("", NAME, result, "\n".join(summary_lines(result)) + "\n", folder=path.parent)
    return result


def averaged_dice(base_net, run_dir: Path, cases, held_out) -> dict[str, float]:
    """Held-out mean Dice of the weight averages of the base model and ``run_dir``/model.pt, by lam."""
    tuned, meta = load_model(run_dir / "model.pt")
    start = base_net.state_dict()
    out = {}
    for lam in AVERAGE_LAMBDAS:
        net = averaged_with(tuned, start, lam)
        ev = evaluate_cases(net, meta, [cases[n] for n in held_out], mc_samples=1, device="cpu")
        out[f"{lam:g}"] = ev["mean"]["left atrium"]["dice"]["mean"]
    return out


def fine_tune_row(args, base_net, meta, model_path, cases, held_out, pool, scored, score_name, key) -> dict:
    scenario, selection, k, mode = key
    picked = chosen(selection, k, pool, scored, score_name)
    row_dir = row_dir_for(scenario, selection, k, mode, args.iterations, args.start)
    unlabeled = [n for n in pool if n not in picked] if mode == "semi" else []
    lib = library_for(row_dir, cases, picked, unlabeled)
    cfg = fine_tune_config(meta, lib, args.iterations)
    cfg["validation"] = {"last": 0}  # all K train; the held-out cases judge (module docstring)
    # the plain fine-tune; the module's model.pt is its average with the start at FINE_TUNE_AVERAGE,
    # measured after it with the other lam (the average is made from the final weights alone)
    cfg.pop("average_with_init", None)
    run = row_dir / "run"
    if run.exists():  # an interrupted row is redone whole
        shutil.rmtree(run)
    run.mkdir(parents=True)
    atomic_write_text(run / "config.in.json", json.dumps(cfg, indent=2))
    argv = fine_tune_command(run / "config.in.json", run, model_path, python=sys.executable, threads=args.threads)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"fine-tune {key} failed: {proc.stderr.strip().splitlines()[-1:]}")
    net, new_meta = load_model(run / "model.pt")
    ev = evaluate_cases(net, new_meta, [cases[n] for n in held_out], mc_samples=1, device="cpu")
    per_case = {c: r["left atrium"]["dice"] for c, r in ev["per_case"].items()}
    return {
        "scenario": scenario,
        "selection": selection,
        "k": k,
        "mode": mode,
        "iterations": args.iterations,
        "start": args.start,
        "method": cfg["method"],
        "cases": picked,
        "held_out_dice": ev["mean"]["left atrium"]["dice"]["mean"],
        "held_out_hd95": ev["mean"]["left atrium"]["hd95"]["mean"],
        "held_out_per_case_dice": per_case,
        "held_out_dice_weight_average": averaged_dice(base_net, run, cases, held_out),
        "fine_tune_wall_s": round(wall, 1),
        "effort_voxels": int(sum(scored[n]["effort_voxels"] for n in picked)),
        "picked_base_dice": [float(scored[n]["dice"]) for n in picked],
        "threads": args.threads,
    }


def summary_lines(result: dict) -> list[str]:
    """The readable table: base, rows by K, heatmap shares."""
    lines = []
    for scenario, base in result["base"].items():
        lines += [
            f"**{scenario}**: base model held-out Dice {base['held_out_dice']:.3f} (HD95 "
            f"{base['held_out_hd95']:.2f} mm) on {base['n_held_out']} cases; pool of {base['n_pool']}."
            + (
                " Adapted to the pool's images (batch-norm statistics, no label): "
                f"{base['adapted']['held_out_dice']:.3f} "
                f"(HD95 {base['adapted']['held_out_hd95']:.2f} mm)."
                if base.get("adapted")
                else ""
            ),
            "",
        ]
        rows = [r for r in result["rows"].values() if r["scenario"] == scenario]
        if rows:
            lines += [
                "| K | selection | mode | iterations | held-out Dice | HD95 mm | share of the shift's loss won back | "
                "base Dice of the K picked | voxels corrected | fine-tune s | "
                f"Dice, averaged with the base: lam {' / '.join(f'{lam:g}' for lam in AVERAGE_LAMBDAS)} |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            ref = result["base"].get("in-domain", {}).get("held_out_dice")
            for r in sorted(
                rows, key=lambda r: (r.get("start", "shipped"), r["k"], r["mode"], r["selection"], r["iterations"])
            ):
                won = (
                    f"{(r['held_out_dice'] - base['held_out_dice']) / (ref - base['held_out_dice']):.2f}"
                    if scenario == "new-scanner" and ref is not None and ref > base["held_out_dice"]
                    else "-"
                )
                picked = r.get("picked_base_dice")
                picked = "-" if not picked else f"{np.mean(picked):.3f} (min {min(picked):.3f})"
                wa = r.get("held_out_dice_weight_average")
                averages = "-" if not wa else " / ".join(f"{wa[f'{lam:g}']:.3f}" for lam in AVERAGE_LAMBDAS)
                lines.append(
                    f"| {r['k']} | {r['selection']} | {r['mode']}"
                    f"{'' if r.get('start', 'shipped') == 'shipped' else ', from ' + r['start']} | "
                    f"{r['iterations']} | {r['held_out_dice']:.3f} | "
                    f"{r['held_out_hd95']:.2f} | {won} | {picked} | {r['effort_voxels']} | "
                    f"{r['fine_tune_wall_s']:.0f} | {averages} |"
                )
            lines.append("")
        shares = base["heatmap"]
        lines += [
            "| first regions reviewed | share of wrong voxels in them | share of the volume they cover |",
            "|---|---|---|",
        ]
        lines += [
            f"| {n} | {shares['wrong_share'][str(n)]:.3f} | {shares['volume_share'][str(n)]:.4f} |" for n in REGIONS
        ]
        lines.append("")
    return lines


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(result["base"])
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 4), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        rows = [
            r
            for r in result["rows"].values()
            if r["scenario"] == scenario
            and r["iterations"] == GRID_ITERATIONS
            and r.get("start", "shipped") == "shipped"
        ]
        ax.axhline(result["base"][scenario]["held_out_dice"], color="grey", ls=":", label="base model")
        adapted = result["base"][scenario].get("adapted")
        if adapted:
            ax.axhline(
                adapted["held_out_dice"], color="C2", ls=":", label="base adapted to the pool's images, no label"
            )
        from_adapted = [
            r
            for r in result["rows"].values()
            if r["scenario"] == scenario and r["iterations"] == GRID_ITERATIONS and r.get("start") == "adapted"
        ]
        if from_adapted:
            ax.scatter(
                [r["k"] for r in from_adapted],
                [r["held_out_dice_weight_average"][f"{FINE_TUNE_AVERAGE:g}"] for r in from_adapted],
                color="C2",
                marker="^",
                label="fine-tuned from the adapted model, averaged with it",
            )
        for mode, color in (("semi", "C0"), ("sup", "C1")):
            for kind, ls in (("suggest", "-"), ("suggest_found", "-."), ("random", "--")):
                pts: dict[int, list[float]] = {}
                avg: dict[int, list[float]] = {}  # the module's model: the average with the start
                for r in rows:  # random: the draws' mean
                    if r["mode"] == mode and (
                        r["selection"] == kind or r["selection"].startswith("random") and kind == "random"
                    ):
                        pts.setdefault(r["k"], []).append(r["held_out_dice"])
                        wa = r.get("held_out_dice_weight_average")
                        if wa:
                            avg.setdefault(r["k"], []).append(wa[f"{FINE_TUNE_AVERAGE:g}"])
                if pts:
                    ks = sorted(pts)
                    ax.plot(ks, [np.mean(pts[k]) for k in ks], ls, color=color, marker="o", label=f"{kind}, {mode}")
                if avg:
                    ks = sorted(avg)
                    ax.plot(
                        ks,
                        [np.mean(avg[k]) for k in ks],
                        ls,
                        color=color,
                        marker="s",
                        alpha=0.5,
                        label=f"{kind}, {mode}, averaged with the base (lam {FINE_TUNE_AVERAGE:g}: the module's)",
                    )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("corrected cases K")
        ax.set_ylabel("held-out Dice")
        ax.set_title(f"{scenario} ({GRID_ITERATIONS}-iteration fine-tunes)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = benchmark_parser(__doc__, "one scenario, K = 1, one fine-tune of 4 iterations on 2 pool cases; writes nothing")
    p.add_argument("--scenario", default="in-domain,new-scanner")
    p.add_argument("--ks", default="1,2,4,8")
    p.add_argument("--draws", type=int, default=3)
    p.add_argument(
        "--suggest-found",
        action="store_true",
        help=f"also suggest's ranking without the cases where a structure was not found (< {FOUND_ML:g} mL)",
    )
    p.add_argument(
        "--selections",
        default=None,
        help="these picks only (suggest, suggest_found, randomD) instead of suggest and --draws random ones",
    )
    p.add_argument("--modes", default="semi,sup")
    p.add_argument("--iterations", type=int, default=GRID_ITERATIONS)
    p.add_argument(
        "--start",
        choices=("shipped", "adapted"),
        default="shipped",
        help="fine-tune from the shipped model or from it adapted to the pool's images (adapt)",
    )
    p.add_argument("--mc-samples", type=int, default=10)
    p.add_argument("--max-rows", type=int, default=None, help="stop after N new fine-tunes")
    p.add_argument("--model", default="la")
    args = p.parse_args(argv)
    if not (LA / "train.list").is_file():
        print(f"the LA2018 data is not at {LA} (kept outside the repository); nothing to measure")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    model_path = resolve_model_path(args.model)
    net, meta = load_model(model_path)
    pool, held_out = pool_and_held_out(meta)
    ks = [int(k) for k in args.ks.split(",")]
    selections = (
        args.selections.split(",")
        if args.selections
        else ["suggest"] + (["suggest_found"] if args.suggest_found else []) + [f"random{d}" for d in range(args.draws)]
    )
    unknown = [s for s in selections if s not in ("suggest", "suggest_found") and not re.fullmatch(r"random\d+", s)]
    if unknown:
        p.error(f"--selections: unknown {', '.join(unknown)} (suggest, suggest_found, randomD)")
    modes = args.modes.split(",")
    if args.smoke:
        pool, held_out, ks, selections, modes = pool[:2], held_out[:1], [1], ["suggest"], ["semi"]
        args.iterations, args.mc_samples, args.scenario = 4, 2, args.scenario.split(",")[-1]
    out_dir = ROOT / "benchmarks" / "results" / args.profile
    path = out_dir / f"{NAME}.json"
    result = {"rows": {}, "base": {}} if args.smoke else read_result(path)

    def save(update) -> dict:
        """Merge ``update`` into the JSON on disk (the smoke run keeps its result in memory)."""
        nonlocal result
        if args.smoke:
            update(result)
        else:
            result = merged(path, update)
        return result

    score_name = meta.quality.score if meta.quality is not None else "mean_boundary_mutual_info"
    new_rows = 0
    t0 = time.perf_counter()
    for scenario in args.scenario.split(","):
        cases = materialize(scenario, pool + held_out)
        scored = pool_scores(net, meta, scenario, {n: cases[n] for n in pool}, args.mc_samples, args.smoke)
        a_net, a_meta, a_path, a_seconds = adapted_start(model_path, meta, scenario, cases, pool, args.smoke)
        adapted = result["base"].get(scenario, {}).get("adapted")
        if args.smoke or not adapted or adapted["model_id"] != a_meta.model_id:  # else measured by an earlier call
            a_ev = evaluate_cases(a_net, a_meta, [cases[n] for n in held_out], mc_samples=1, device="cpu")
            adapted = {
                "model_id": a_meta.model_id,
                "held_out_dice": a_ev["mean"]["left atrium"]["dice"]["mean"],
                "held_out_hd95": a_ev["mean"]["left atrium"]["hd95"]["mean"],
                "held_out_per_case_dice": {c: r["left atrium"]["dice"] for c, r in a_ev["per_case"].items()},
                "batches": ADAPT_BATCHES,
            }
        if a_seconds is not None:
            adapted["adapt_s"] = round(a_seconds, 1)
        start_net, start_meta, start_path, start_scored = net, meta, model_path, scored
        if args.start == "adapted":
            start_net, start_meta, start_path = a_net, a_meta, a_path
            start_scored = pool_scores(
                a_net, a_meta, scenario, {n: cases[n] for n in pool}, args.mc_samples, args.smoke
            )
        backfill: dict[str, dict] = {}
        for row_id, row in result["rows"].items():
            if row["scenario"] != scenario:
                continue
            if "picked_base_dice" not in row:  # rows written before the picked cases' base Dice was kept
                backfill.setdefault(row_id, {})["picked_base_dice"] = [float(scored[n]["dice"]) for n in row["cases"]]
            start = row.get("start", "shipped")
            run = row_dir_for(scenario, row["selection"], row["k"], row["mode"], row["iterations"], start) / "run"
            if "held_out_dice_weight_average" not in row and start == "shipped" and (run / "model.pt").is_file():
                # rows written before the weight averages were measured
                backfill.setdefault(row_id, {})["held_out_dice_weight_average"] = averaged_dice(
                    net, run, cases, held_out
                )
        base_ev = evaluate_cases(net, meta, [cases[n] for n in held_out], mc_samples=1, device="cpu")
        base = {
            "model_id": meta.model_id,
            "n_pool": len(pool),
            "n_held_out": len(held_out),
            "held_out_dice": base_ev["mean"]["left atrium"]["dice"]["mean"],
            "held_out_hd95": base_ev["mean"]["left atrium"]["hd95"]["mean"],
            "pool_dice": float(np.mean([s["dice"] for s in scored.values()])),
            "adapted": adapted,
            "heatmap": {
                what: {str(n): float(np.mean([s[field][str(n)] for s in scored.values()])) for n in REGIONS}
                for what, field in HEATMAP_FIELDS
            },
        }

        def add_base(r: dict, scenario=scenario, base=base, backfill=backfill) -> None:
            r["base"][scenario] = base
            for row_id, fields in backfill.items():
                if row_id in r["rows"]:
                    r["rows"][row_id].update(fields)

        save(add_base)
        for k in ks:
            for mode in modes:
                for selection in selections:
                    key = (scenario, selection, k, mode)
                    row_id = f"{scenario}/{selection}/K{k}/{mode}/{args.iterations}/{meta.model_id}"
                    row_id += "" if args.start == "shipped" else f"/from-{args.start}"
                    if row_id in result["rows"]:
                        continue
                    if args.max_rows is not None and new_rows >= args.max_rows:
                        continue
                    row_dir = row_dir_for(scenario, selection, k, mode, args.iterations, args.start)
                    if not args.smoke and not claim_row(path, row_id, row_dir):
                        print(f"{row_id}: measured or being measured by another call; skipped", flush=True)
                        continue
                    row = fine_tune_row(
                        args, start_net, start_meta, start_path, cases, held_out, pool, start_scored, score_name, key
                    )
                    save(lambda r, row_id=row_id, row=row: r["rows"].__setitem__(row_id, row))
                    (row_dir / "claimed_by_pid").unlink(missing_ok=True)
                    new_rows += 1
                    dice_s = f"held-out Dice {row['held_out_dice']:.4f}, {row['fine_tune_wall_s']:.0f} s"
                    print(f"{row_id}: {dice_s}", flush=True)
    if args.smoke:
        print(json.dumps({k: v["held_out_dice"] for k, v in result["rows"].items()}))
        return 0
    result = save(lambda r: r.__setitem__("wall_s_last_call", time.perf_counter() - t0))
    plot(result, out_dir / f"{NAME}.png")
    print("\n".join(summary_lines(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
