"""Accuracy table of every method at two labeled fractions, with lower and upper bounds (Table 1 of the seeds).

    python benchmarks/method_comparison.py --task la   [--profile cpu-small|gpu-full] [--labeled 8,16] [--seeds 1337]
                                                       [--iterations 600] [--methods supervised,sassnet,...]
    python benchmarks/method_comparison.py --task cine [--labeled 6,14] [--iterations 600]
                                                       [--methods supervised,bmtctl,mtn,dtc,...]

Each method is trained by ``training.Trainer`` with only the method (and its own network options:
dual V-Net for DTML, separate SDM decoder for MTCTL/BMT-CTL, area head for MTN) changed. Cine rows:
the 2D U-Net's own methods (BMT-CTL, MTN) and the 3D methods' 2D counterparts where they apply: DTC,
UA-MT (3 teacher passes, as BMT-CTL's 3 MC passes at this profile) and SASSNet (its discriminator
from 2D convolutions) run unchanged on the U-Net, the SDM head on the segmentation decoder as in
their papers (the base's separate SDM decoder is BMT-CTL's); DTML's network pair is 3D only, and MTCTL's 2D
counterpart is BMT-CTL:
* profile ``cpu-small`` (2 CPU cores): the shipped models' CPU configurations made cheaper
  (``la_sassnet_cpu.json`` at 2 mm, 48 x 48 x 32 crops, V-Net width 8; ``acdc_bmtctl_cpu.json``:
  192 x 192 slices, 128 x 128 crops, U-Net width 16, every method's supervised term 0.5 (CE + Dice),
  MTN's too, though its paper uses CE alone: the rows then differ by the method's own terms only),
  ``iterations`` short, the learning rate stepped x0.1 at 85 % of the run;
* profile ``gpu-full``: each method's paper configuration (``configs/NAME.json``: 112 x 112 x 80
  crops at 0.625 mm, batch 4 with 2 labeled, 6000 iterations, SGD 0.01 x0.1 every 2500) on CUDA.
Split (recorded): LA2018 - the first 68 cases of train.list train (``--labeled`` of them labeled,
8 = 10 % and 16 = 20 % of the 80 as in the papers), the last 12 are held out; ACDC - train.list
(70 patients; ``--labeled`` counts frames, 2 per patient: 6 = 3 patients, 14 = 7), val.list (10
patients) held out. Bounds: ``supervised`` at each labeled count (lower) and ``supervised_all``
(every training case labeled; upper). Controls (``CONTROLS``, not in the default lists):
``supervised_half``, supervised with a batch of only the labeled images a semi-supervised batch
holds (4 of the cine rows' 8), which tells the cost of seeing fewer labeled images per step from
that of the methods' unlabeled terms; ``supervised_half_shared``, the same with the SDM head on the
segmentation decoder (the cine counterparts' network); ``sassnet_no_adv``, SASSNet with its
adversarial weight at 0 (the unlabeled images only pass through the network's BatchNorm);
``dtc_no_consistency``, DTC with its consistency weight at 0 (its two supervised tasks alone);
``bmtctl_no_consistency`` and ``mtctl_no_consistency``, BMT-CTL and MTCTL likewise (no cross-task
or guidance term, no MC passes). Each
trained model is evaluated on the held-out cases
(``evaluation.evaluate_cases``, deterministic, no TTA): Dice, Jaccard, HD95, ASD (mm; voxels for the
ACDC .h5 files, which store no spacing), RAVD, precision, recall, mean +- std over cases, per
structure; "gain recovered" = (method - lower) / (upper - lower) on mean Dice. With several
``--seeds`` each row also gives the spread (std) of the mean Dice over seeds.
Writes benchmarks/results/<profile>/method_comparison_<task>.json and .md (``_<N>it`` added to the
name at another iteration count than the profile's: each budget its own table), merged with the
rows already there, so seeds or fractions run separately add up;
runs go to runs/bench/.
Real data is read from ../shared and never copied; without it the benchmark says so and stops.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable

from common import ROOT, benchmark_parser, locked, publish

from SemiSupCardiacSegLib.config_files import CONFIGS, load_config

TASKS = {
    # LA at 2 mm with a width-8 V-Net: ~4x cheaper per iteration than the shipped 1.25 mm model, so
    # every method gets 600 iterations within minutes on 2 cores.
    "la": {
        "base": "la_sassnet_cpu.json",
        "data": ROOT.parent / "shared" / "data" / "LA2018" / "train.list",
        "methods": "supervised,sassnet,dtc,mtctl,uamt,dtml,supervised_all",
        "iterations": 600,
        "labeled": "8,16",
        "overrides": {
            "preprocessing": {"spacing": [2.0, 2.0, 2.0], "normalization": "zscore"},
            "patch_size": [48, 48, 32],
            "n_filters": 8,
        },
    },
    "cine": {
        "base": "acdc_bmtctl_cpu.json",
        "data": ROOT.parent / "shared" / "data" / "ACDC" / "train.list",
        "methods": "supervised,bmtctl,mtn,dtc,uamt,sassnet,supervised_all",
        "iterations": 600,
        "labeled": "6,14",
        "overrides": {},
    },
}
#: 3D methods whose 2D counterparts run on the cine U-Net as they are (with the SDM head on the
#: segmentation decoder, as in their papers' V-Net).
COUNTERPARTS_2D = ("dtc", "sassnet", "uamt")
#: Controls (not in the default lists): a base method ("method", default supervised) with its
#: network and method parameters changed as given; "labeled_only" batches hold only the labeled
#: images a semi-supervised batch holds.
CONTROLS = {
    "supervised_half": {"labeled_only": True},
    "supervised_half_shared": {"labeled_only": True, "network": {"sdm_decoder": "shared"}},
    # SASSNet without its adversarial term: the unlabeled half of the batch only passes
    # through the network (its BatchNorm statistics), no loss on it
    "sassnet_no_adv": {"method": "sassnet", "method_params": {"adv_weight": 0.0}},
    # DTC without its dual-task consistency: the supervised terms of DTC (segmentation + SDM
    # regression) alone, which tells the SDM head's effect from that of the unlabeled term
    "dtc_no_consistency": {"method": "dtc", "method_params": {"consistency": 0.0}},
    # BMT-CTL / MTCTL without their cross-task and guidance terms (the MC-dropout passes then
    # skipped): the supervised tasks, dropout and the adversarial SDM term alone
    "bmtctl_no_consistency": {"method": "bmtctl", "method_params": {"consistency": 0.0}},
    "mtctl_no_consistency": {"method": "mtctl", "method_params": {"consistency": 0.0}},
}
#: A method name ending in this suffix runs that method with BCP's bidirectional copy-paste added
#: (config ``copy_paste``, ``methods.copy_paste``), e.g. ``sassnet+bcp``: the with/without pair.
COPY_PASTE_SUFFIX = "+bcp"
#: A method name ending in this suffix (after any ``+bcp``) trains under bf16 autocast (config
#: ``precision``, ``training.precision``), e.g. ``supervised@bf16``; every other row is pinned to
#: float32, the arithmetic of the rows measured before the option existed.
BF16_SUFFIX = "@bf16"


def is_upper(variant: str) -> bool:
    """The all-labeled upper bound (``supervised_all``), in either arithmetic."""
    return variant.removesuffix(BF16_SUFFIX) == "supervised_all"


#: The paper configuration of the supervised bounds, per task (gpu-full profile).
SUPERVISED_PAPER = {"la": "supervised.json", "cine": "bmtctl.json"}


def _paper(name: str) -> dict:
    """The composed config ``configs/NAME`` (its method's parameters spelled out), without notes."""
    return {k: v for k, v in load_config(CONFIGS / name).items() if not k.startswith("_")}


def method_config(
    task: str,
    method: str,
    iterations: int | None,
    labeled: int | None = None,
    seed: int | None = None,
    profile: str = "cpu-small",
) -> dict:
    """The training config of ``method`` on ``task``: the profile's base with the method swapped in.

    labeled: labeled training cases (frames for cine); ignored for ``supervised_all`` (all labeled).
    """
    if method.endswith(BF16_SUFFIX):
        cfg = method_config(task, method[: -len(BF16_SUFFIX)], iterations, labeled, seed, profile)
        cfg["precision"] = "bfloat16"
        return cfg
    if method.endswith(COPY_PASTE_SUFFIX):
        cfg = method_config(task, method[: -len(COPY_PASTE_SUFFIX)], iterations, labeled, seed, profile)
        cfg["copy_paste"] = {}
        return cfg
    name = (
        "supervised"
        if method == "supervised_all"
        else CONTROLS[method].get("method", "supervised")
        if method in CONTROLS
        else method
    )
    if profile == "gpu-full":
        cfg = _paper(SUPERVISED_PAPER[task] if (name == "supervised" and task == "cine") else f"{name}.json")
        if name == "supervised":
            cfg["method"] = "supervised"
        cfg["validation"] = {**cfg.get("validation", {}), "every": int(iterations or cfg["iterations"])}
        if iterations:
            cfg["iterations"] = iterations
    else:
        base = load_config(CONFIGS / TASKS[task]["base"])
        paper = _paper(f"{name}.json")
        cfg = {k: v for k, v in base.items() if not k.startswith("_")}
        cfg["method"] = name
        params = dict(paper.get("method_params", {}))
        if "disc_filters" in params:
            params["disc_filters"] = 32
        if "mc_passes" in params and task == "cine":
            params["mc_passes"] = base["method_params"].get("mc_passes", params["mc_passes"])
        if task == "cine" and "seg_loss" in params:  # every cine row's supervised term alike, MTN's too
            params["seg_loss"] = "dice_ce"
        cfg["method_params"] = params
        if paper.get("arch") == "dual_vnet":
            cfg["arch"] = "dual_vnet"
        net = dict(base["network"])
        for key in ("sdm_decoder", "area_head"):
            if key in paper.get("network", {}):
                net[key] = paper["network"][key]
        if task == "cine" and name in COUNTERPARTS_2D:  # their papers' one network with two heads
            net["sdm_decoder"] = "shared"
        over = TASKS[task]["overrides"]
        if "n_filters" in over:
            net["n_filters"] = over["n_filters"]
        for key in ("preprocessing", "patch_size"):
            if key in over:
                cfg[key] = over[key]
        cfg["network"] = net
        iterations = iterations or TASKS[task]["iterations"]
        cfg["iterations"] = iterations
        cfg["optim"] = json.loads(json.dumps(base["optim"]))
        cfg["optim"]["model"].update(schedule="step", step=max(1, int(0.85 * iterations)))
        cfg["validation"] = {**base["validation"], "every": iterations}
    if labeled is not None:
        cfg["labeled"] = int(labeled)
    if seed is not None:
        cfg["seed"] = int(seed)
    if method == "supervised_all":
        cfg["labeled"] = None  # every training case with a label
    cfg["precision"] = "float32"
    if method in CONTROLS:
        control = CONTROLS[method]
        if control.get("labeled_only"):  # as many labeled images per step as the semi-supervised rows see
            cfg["batch_size"] = cfg["labeled_per_batch"]
        cfg["network"] = {**cfg["network"], **control.get("network", {})}
        cfg["method_params"] = {**cfg.get("method_params", {}), **control.get("method_params", {})}
    return cfg


def train_or_reuse(out: Path, train: Callable[[], object]) -> float | None:
    """Run ``train`` unless ``out`` holds a finished run (``model.pt``); the training's wall time in
    seconds, kept in ``out/bench_wall_s.json`` so that a reused run reports it too (the last part's
    if the training was resumed; None for a run finished before the time was kept)."""
    from SemiSupCardiacSegLib.atomic import atomic_write_text

    wall_file = out / "bench_wall_s.json"
    if not (out / "model.pt").exists():
        t0 = time.perf_counter()
        train()
        atomic_write_text(wall_file, json.dumps({"wall_s": time.perf_counter() - t0}))
    return float(json.loads(wall_file.read_text())["wall_s"]) if wall_file.exists() else None


def run_one(
    task: str,
    method: str,
    labeled: int | None,
    seed: int | None,
    iterations: int | None,
    out_root: Path,
    device: str,
    profile: str,
    progress: bool,
) -> dict:
    """Train (or reuse a finished run) and evaluate on the held-out cases."""
    from SemiSupCardiacSegLib.checkpoint import load_model
    from SemiSupCardiacSegLib.data import find_cases
    from SemiSupCardiacSegLib.evaluation import evaluate_cases
    from SemiSupCardiacSegLib.training import Trainer

    cfg = method_config(task, method, iterations, labeled, seed, profile)
    tag = "all" if is_upper(method) else f"l{cfg['labeled']}"
    out = out_root / profile / f"{task}_{method}_{tag}_s{cfg.get('seed', 'default')}_{cfg['iterations']}"
    data = cfg["data"] if isinstance(cfg["data"], list) else [cfg["data"]]
    cfg["data"] = [str((ROOT / d).resolve()) for d in data]
    if "list" in cfg["validation"]:
        cfg["validation"]["list"] = str((ROOT / cfg["validation"]["list"]).resolve())
    wall = train_or_reuse(
        out, lambda: Trainer(cfg, out, device=device, progress=progress).run(resume=(out / "last.pt").exists())
    )
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r["step_s"] for r in logs if "step_s" in r]
    net, meta = load_model(out / "model.pt")
    td = meta.training_data
    held = set(td["validation_cases"])
    cases = [
        c
        for src in cfg["data"] + ([cfg["validation"]["list"]] if "list" in cfg["validation"] else [])
        for c in find_cases(src)
        if c.name in held
    ]
    evaluation = evaluate_cases(
        net, meta, list({c.name: c for c in cases}.values()), mc_samples=1, tta=False, device=device
    )
    extra = {}
    if task == "cine":  # EF error from each held-out patient's ED + ES frames (segmented as `segment` does: its TTA)
        from cine_indices import ef_mean_absolute_error, ef_per_patient, validation_patients

        extra["ef_abs_error"] = ef_mean_absolute_error(ef_per_patient(net, meta, validation_patients(), device=device))
    curve = [[r["iteration"], r["loss_seg"]] for r in logs if "loss_seg" in r]
    return {
        **extra,
        "method": cfg["method"],
        "variant": method,
        "precision": cfg["precision"],
        "labeled": td["n_labeled"],
        "seed": cfg.get("seed"),
        "iterations": cfg["iterations"],
        "s_per_it": steps[-1] if steps else None,
        "wall_s": wall,
        "loss_seg_curve": curve,
        "held_out": sorted(held),
        "distance_unit": evaluation["distance_unit"],
        "mean": evaluation["mean"],
        "run": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
    }


METRICS = ("dice", "jaccard", "hd95", "asd", "ravd", "precision", "recall")


def mean_dice(row: dict) -> float:
    """Mean over structures of the held-out mean Dice."""
    return sum(s["dice"]["mean"] for s in row["mean"].values()) / len(row["mean"])


def summarize(rows: dict) -> dict:
    """Per (variant, labeled): mean and spread over seeds of the mean Dice, and gain recovered."""
    import numpy as np

    groups: dict[tuple, list] = {}
    for r in rows.values():
        groups.setdefault((r["variant"], r["labeled"]), []).append(r)
    summary = {}
    for (variant, lab), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        d = [mean_dice(r) for r in rs]
        # the bounds of the row's own arithmetic where they were run (supervised@bf16 for a @bf16 row)
        suffix = BF16_SUFFIX if variant.endswith(BF16_SUFFIX) else ""
        bound = {
            b: b + suffix if any(v == b + suffix for v, _ in groups) else b for b in ("supervised", "supervised_all")
        }
        upper = [mean_dice(r) for (v, _), rs2 in groups.items() if v == bound["supervised_all"] for r in rs2]
        lower = [mean_dice(r) for r in groups.get((bound["supervised"], lab), [])]
        entry = {
            "variant": variant,
            "labeled": lab,
            "n_seeds": len(d),
            "dice_mean": float(np.mean(d)),
            "dice_seed_std": float(np.std(d)) if len(d) > 1 else None,
        }
        for side in ("lv", "rv"):
            errors = [r["ef_abs_error"][side] for r in rs if "ef_abs_error" in r]
            if errors:
                entry[f"{side}_ef_mae"] = float(np.mean(errors))
        if (
            upper
            and lower
            and variant.removesuffix(BF16_SUFFIX) not in ("supervised", "supervised_all")
            and np.mean(upper) != np.mean(lower)
        ):
            entry["gain_recovered"] = float((np.mean(d) - np.mean(lower)) / (np.mean(upper) - np.mean(lower)))
        summary[f"{variant} @ {lab}"] = entry
    return summary


def table_lines(rows: dict, summary: dict) -> list[str]:
    """Markdown: the summary (mean Dice, spread over seeds, gain recovered), then every run's metrics
    (mean +- std over held-out cases) per structure."""
    ef = any("lv_ef_mae" in v for v in summary.values())
    head = "| method | labeled | seeds | mean Dice | std over seeds | gain recovered |" + (
        " LV EF error | RV EF error |" if ef else ""
    )
    lines = [head, "|---" * head.count(" | ") + "|---|"]
    for v in summary.values():
        spread = "-" if v["dice_seed_std"] is None else format(v["dice_seed_std"], ".3f")
        gain = format(v["gain_recovered"], ".2f") if "gain_recovered" in v else "-"
        cells = [v["variant"], v["labeled"], v["n_seeds"], f"{v['dice_mean']:.3f}", spread, gain]
        if ef:
            cells += [f"{v[k]:.1f} %" if k in v else "-" for k in ("lv_ef_mae", "rv_ef_mae")]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    if ef:
        lines += [
            "",
            "EF error: mean absolute difference (percentage points) between the ejection fraction from the "
            "predicted and from the reference ED + ES segmentations of each held-out patient.",
        ]
    unit = next(iter(rows.values()))["distance_unit"] if rows else "mm"
    lines += [
        "",
        f"Per run, held-out mean ± std over cases (HD95 and ASD in {unit}):",
        "",
        "| run | structure | " + " | ".join(METRICS) + " | s / it |",
        "|---|---|" + "---|" * (len(METRICS) + 1),
    ]
    for key, r in rows.items():
        for structure, m in r["mean"].items():
            cells = [f"{m[k]['mean']:.3f} ± {m[k]['std']:.3f}" for k in METRICS]
            lines.append(f"| {key} | {structure} | " + " | ".join(cells) + f" | {r['s_per_it']:.2f} |")
    return lines


def result_name(task: str, iterations: int) -> str:
    """The results file of a task at an iteration count: ``method_comparison_<task>`` at the cpu-small
    profile's own count, ``method_comparison_<task>_<N>it`` at another (each budget its own table)."""
    default = TASKS[task]["iterations"]
    return f"method_comparison_{task}" if iterations == default else f"method_comparison_{task}_{iterations}it"


def earlier_rows(profile: str, task: str, iterations: int) -> dict:
    """The rows already in results/<profile>/method_comparison_<task>.json with the same iteration
    count: separate invocations (other seeds, fractions, methods, sessions) add up to one table; a
    row measured again replaces its earlier self (same key). A row is kept when its run folder is
    gone (runs/ is not kept between sessions): the row holds its metrics and its loss curve."""
    path = ROOT / "benchmarks" / "results" / profile / f"{result_name(task, iterations)}.json"
    if not path.is_file():
        return {}
    old = json.loads(path.read_text()).get("results", {})
    return {k: v for k, v in old.items() if not k.startswith("_") and v.get("iterations") == iterations}


def loss_curve(row: dict) -> list:
    """[[iteration, loss_seg], ...] of a row: stored in it, or read from its run's log.jsonl (rows
    measured before curves were stored); [] when neither is there."""
    if row.get("loss_seg_curve"):
        return row["loss_seg_curve"]
    log = ROOT / row.get("run", "") / "log.jsonl"
    if not row.get("run") or not log.is_file():
        return []
    return [[g["iteration"], g["loss_seg"]] for g in map(json.loads, log.read_text().splitlines()) if "loss_seg" in g]


def learning_curves(rows: dict, out: Path) -> None:
    """One panel per labeled count: each run's supervised segmentation loss (``loss_seg`` of its
    log.jsonl, a running mean over 5 logged points) against the iteration; the upper bound
    (``supervised_all``, dashed like the lower bound) in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from SemiSupCardiacSegLib.atomic import atomic_path

    counts = sorted({r["labeled"] for r in rows.values() if not is_upper(r["variant"])}) or [0]
    colors = {v: f"C{i}" for i, v in enumerate(sorted({r["variant"] for r in rows.values()}))}
    fig, axes = plt.subplots(1, len(counts), figsize=(5 * len(counts), 3.6), squeeze=False, sharey=True)
    for ax, n in zip(axes[0], counts):
        handles, seeds = (
            {},
            {},
        )  # variant -> its first line / the seeds drawn in this panel (one legend entry per variant)
        for key, r in rows.items():
            if r["labeled"] != n and not is_upper(r["variant"]):  # the upper bound is drawn in every panel
                continue
            pts = loss_curve(r)
            if len(pts) < 2:
                continue
            it, loss = map(np.array, zip(*pts))
            smooth = np.convolve(loss, np.ones(5) / 5, mode="valid") if len(loss) >= 5 else loss
            lines = ax.plot(
                it[len(it) - len(smooth) :],
                smooth,
                lw=1.2,
                color=colors[r["variant"]],
                ls="--" if r["variant"].startswith("supervised") else "-",
            )
            handles.setdefault(r["variant"], lines[0])
            seeds.setdefault(r["variant"], []).append(r.get("seed"))
        ax.set_title(f"{n} labeled", fontsize=9)
        ax.set_xlabel("iteration")
        ax.set_yscale("log")
        if handles:
            ax.legend(
                list(handles.values()), [f"{k} (seed {', '.join(map(str, seeds[k]))})" for k in handles], fontsize=7
            )
    axes[0][0].set_ylabel("supervised segmentation loss (training)")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    p = benchmark_parser(__doc__)
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--methods", help="comma-separated; default: every method of the task and the bounds")
    p.add_argument("--labeled", help="comma-separated labeled counts (LA cases, ACDC frames); default 10 %% and 20 %%")
    p.add_argument("--seeds", default="1337", help="comma-separated training seeds")
    p.add_argument("--iterations", type=int, help="training iterations per run (default: the profile's)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    task = TASKS[args.task]
    methods = (args.methods or task["methods"]).split(",")
    labeled = [int(x) for x in (args.labeled or task["labeled"]).split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    if args.smoke:  # no data needed: every method's config builds its method (both profiles), and the table code runs
        from SemiSupCardiacSegLib.methods import get_method
        from SemiSupCardiacSegLib.training import DEFAULTS, merge_config

        for profile in ("cpu-small", "gpu-full"):
            for m in methods + [c for c in CONTROLS if c not in methods]:
                cfg = method_config(args.task, m, 10, labeled[0], seeds[0], profile)
                get_method(cfg["method"])(merge_config(DEFAULTS, cfg))
        fake = {
            f"{v} {n_lab}": {
                "variant": v,
                "labeled": n_lab,
                "s_per_it": 1.0,
                "distance_unit": "mm",
                "ef_abs_error": {"lv": 2.0, "rv": 5.0},
                "seed": 1,
                "loss_seg_curve": [[10 * i, 1.0 / i] for i in range(1, 8)],
                "mean": {"x": {k: {"mean": d, "std": 0.0} for k in METRICS}},
            }
            for v, n_lab, d in (("supervised", 8, 0.6), ("sassnet", 8, 0.7), ("supervised_all", 68, 0.9))
        }
        summary = summarize(fake)
        table = table_lines(fake, summary)
        assert abs(summary["sassnet @ 8"]["gain_recovered"] - 1 / 3) < 1e-9 and "2.0 %" in table[2], table
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            for i, row in enumerate(fake.values()):
                (Path(tmp) / str(i)).mkdir()
                (Path(tmp) / str(i) / "log.jsonl").write_text(
                    "".join(json.dumps({"iteration": 10 * j, "loss_seg": 1.0 / j}) + "\n" for j in range(1, 12))
                )
                row["run"] = str(Path(tmp) / str(i))
            learning_curves(fake, Path(tmp) / "curves.png")
            assert (Path(tmp) / "curves.png").stat().st_size > 1000
        print({"methods": methods, "gain": summary["sassnet @ 8"]["gain_recovered"], "ok": True})
        return 0
    if not Path(task["data"]).is_file():
        print(
            f"real data not found at {task['data']} (kept outside the repository); nothing to benchmark",
            file=sys.stderr,
        )
        return 2
    runs = [
        (m, None if is_upper(m) else n, s)
        for s in seeds
        for n in labeled
        for m in methods
        if not (is_upper(m) and n != labeled[0])
    ]
    # the profile's iteration count (600 at cpu-small, the paper config's at gpu-full), as run_one will use it
    iterations = method_config(args.task, methods[0], args.iterations, labeled[0], seeds[0], args.profile)["iterations"]
    mine: dict = {}
    for m, n, s in runs:  # published after every run, so a stopped benchmark keeps what it measured
        key = f"{m}, {'all' if n is None else n} labeled, seed {s}"
        mine[key] = run_one(
            args.task, m, n, s, args.iterations, ROOT / "runs" / "bench", args.device, args.profile, progress=True
        )
        print(json.dumps({key: round(mean_dice(mine[key]), 4)}), flush=True)
        # re-read and write under the table's lock: rows another benchmark process publishes are kept
        name = result_name(args.task, iterations)
        folder = ROOT / "benchmarks" / "results" / args.profile
        with locked(folder / f"{name}.json"):
            rows = {**earlier_rows(args.profile, args.task, iterations), **mine}
            summary = summarize(rows)
            curves = f"{name}_curves.png"
            learning_curves(rows, folder / curves)
            publish(
                args.profile,
                name,
                {**rows, "_summary": summary},
                [],
                lambda k, v: None,
                extra_lines=table_lines(rows, summary)
                + [
                    "",
                    f"Learning curves: {curves} (each method's own supervised "
                    "loss, e.g. cross-entropy for MTN: compare curves' shapes, not levels across methods).",
                ],
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
