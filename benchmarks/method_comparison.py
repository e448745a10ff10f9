"""Validation Dice and training speed of every method trained the same short way (the small profile).

    python benchmarks/method_comparison.py --task la   [--iterations 500] [--methods supervised,sassnet,...]
    python benchmarks/method_comparison.py --task cine [--iterations 1000] [--methods supervised,bmtctl,mtn]

Each method is trained by ``training.Trainer`` from the shipped models' CPU configurations, made
cheaper (``la_sassnet_cpu.json`` at 2 mm instead of 1.25, 48 x 48 x 32 crops, V-Net width 8; 16
labeled of the first 68 LA2018 cases, the last 12 held out, Dice in model space at 2 mm;
``acdc_bmtctl_cpu.json``: slices resized to 192 x 192, 128 x 128 crops, U-Net width 16, 7 labeled
ACDC patients, the 10 val.list patients held out), with only the
method (and the method's own network options: dual V-Net for DTML, separate SDM decoder for
MTCTL/BMT-CTL, area head for MTN) changed, and ``iterations`` short enough for a 2-core CPU. The
learning rate steps x0.1 at 85 % of the run. ``supervised_all`` (LA) is the upper bound: the
supervised V-Net with every training case labeled. The figures rank methods under a small budget;
they are not the papers' 6000-iteration numbers (see the gpu-full profile for those settings).
Writes benchmarks/results/<profile>/method_comparison_<task>.json and .md; runs go to runs/bench/.
Real data is read from ../shared and never copied; without it the benchmark says so and stops.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from common import ROOT, benchmark_parser, publish

CONFIGS = ROOT / "SemiSupCardiacSegLib" / "configs"
TASKS = {
    # LA at 2 mm with a width-8 V-Net: ~4x cheaper per iteration than the shipped 1.25 mm model, so
    # every method gets 600 iterations within minutes on 2 cores.
    "la": {"base": "la_sassnet_cpu.json", "data": ROOT.parent / "shared" / "data" / "LA2018" / "train.list",
           "methods": "supervised,sassnet,dtc,mtctl,uamt,dtml,supervised_all", "iterations": 600,
           "overrides": {"preprocessing": {"spacing": [2.0, 2.0, 2.0], "normalization": "zscore"},
                         "patch_size": [48, 48, 32], "n_filters": 8}},
    "cine": {"base": "acdc_bmtctl_cpu.json", "data": ROOT.parent / "shared" / "data" / "ACDC" / "train.list",
             "methods": "supervised,bmtctl,mtn", "iterations": 600, "overrides": {}},
}


def method_config(task: str, method: str, iterations: int) -> dict:
    """The task's CPU base config with ``method`` swapped in (its paper method_params, CPU-sized D)."""
    base = json.loads((CONFIGS / TASKS[task]["base"]).read_text())
    name = "supervised" if method == "supervised_all" else method
    paper = json.loads((CONFIGS / f"{name}.json").read_text())
    cfg = {k: v for k, v in base.items() if not k.startswith("_")}
    cfg["method"] = name
    params = dict(paper.get("method_params", {}))
    if "disc_filters" in params:
        params["disc_filters"] = 32
    if "mc_passes" in params and task == "cine":
        params["mc_passes"] = base["method_params"].get("mc_passes", params["mc_passes"])
    if task == "cine" and "seg_loss" in params and name != "mtn":
        params["seg_loss"] = "dice_ce"
    cfg["method_params"] = params
    if paper.get("arch") == "dual_vnet":
        cfg["arch"] = "dual_vnet"
    net = dict(base["network"])
    for key in ("sdm_decoder", "area_head"):
        if key in paper.get("network", {}):
            net[key] = paper["network"][key]
    over = TASKS[task]["overrides"]
    if "n_filters" in over:
        net["n_filters"] = over["n_filters"]
    for key in ("preprocessing", "patch_size"):
        if key in over:
            cfg[key] = over[key]
    cfg["network"] = net
    cfg["iterations"] = iterations
    cfg["optim"] = json.loads(json.dumps(base["optim"]))
    cfg["optim"]["model"].update(schedule="step", step=max(1, int(0.85 * iterations)))
    cfg["validation"] = {**base["validation"], "every": iterations}
    if method == "supervised_all":
        cfg["labeled"] = None  # every training case with a label
    return cfg


def run_one(task: str, method: str, iterations: int, out_root: Path, device: str, progress: bool) -> dict:
    from SemiSupCardiacSegLib.training import Trainer

    out = out_root / f"{task}_{method}_{iterations}"
    cfg = method_config(task, method, iterations)
    data = cfg["data"] if isinstance(cfg["data"], list) else [cfg["data"]]
    cfg["data"] = [str((ROOT / d).resolve()) for d in data]
    if "list" in cfg["validation"]:
        cfg["validation"]["list"] = str((ROOT / cfg["validation"]["list"]).resolve())
    t0 = time.perf_counter()
    if not (out / "model.pt").exists():
        Trainer(cfg, out, device=device, progress=progress).run(resume=(out / "last.pt").exists())
    wall = time.perf_counter() - t0
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r["step_s"] for r in logs if "step_s" in r]
    vals = [r for r in logs if "val_dice" in r]
    return {"method": cfg["method"], "labeled": cfg["labeled"], "iterations": iterations,
            "val_dice": vals[-1]["val_dice"] if vals else None, "s_per_it": steps[-1] if steps else None,
            "wall_s": wall, "run": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out)}


def main(argv=None) -> int:
    p = benchmark_parser(__doc__)
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--methods", help="comma-separated; default: every method of the task")
    p.add_argument("--iterations", type=int, help="training iterations per method")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    task = TASKS[args.task]
    if not Path(task["data"]).is_file():
        print(f"real data not found at {task['data']} (kept outside the repository); nothing to benchmark", file=sys.stderr)
        return 0 if args.smoke else 2
    methods = (args.methods or task["methods"]).split(",")
    iterations = args.iterations or task["iterations"]
    if args.smoke:  # configuration check only: every method's config builds its method
        from SemiSupCardiacSegLib.methods import get_method
        from SemiSupCardiacSegLib.training import DEFAULTS, merge_config

        for m in methods:
            get_method(method_config(args.task, m, 10)["method"])(merge_config(DEFAULTS, method_config(args.task, m, 10)))
        print({"methods": methods, "ok": True})
        return 0
    rows = {}
    for m in methods:  # results are published after every method, so a stopped run keeps what it measured
        rows[m] = run_one(args.task, m, iterations, ROOT / "runs" / "bench", args.device, progress=True)
        print(json.dumps({m: rows[m]}), flush=True)
        publish(args.profile, f"method_comparison_{args.task}", rows,
                ["method", "labeled", "iterations", "validation Dice", "s / iteration (training log)"],
                lambda k, v: [k, str(v["labeled"] if v["labeled"] is not None else "all"), str(v["iterations"]),
                              f"{v['val_dice']:.3f}" if v["val_dice"] is not None else "-", f"{v['s_per_it']:.2f}" if v["s_per_it"] else "-"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
