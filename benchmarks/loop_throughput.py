"""Training-loop throughput on real data: the project's loop against the reference loop's per-iteration work.

    python benchmarks/loop_throughput.py [--profile cpu-small|gpu-full] [--iterations 20] [--smoke]

For the supervised V-Net and SASSNet, the same network, losses, optimizer, crops and batches
(2 labeled + 2 unlabeled, two-stream sampler) are timed in two loops:
  project:   DataLoader workers (``--workers``, the training config's ``num_workers``) crop, augment
             and compute the SDM targets (``CropDataset``) while the main process trains;
  reference: as kleinzcy/SASSnet's train loop: no workers (our measurement), crops on the main process and the
             labeled rows' SDM targets computed there each iteration (its ``compute_sdf``; here
             ``sdm.multiclass_sdm``, the same two EDTs per mask).
Per loop: seconds per iteration, and the shares spent waiting for data, computing SDM targets and
in the optimisation step; the ratio reference / project. Cases: the first 4 labeled and 4 unlabeled
of ../shared/data/LA2018 (phantoms with --smoke or without the data), at the profile's grid:
cpu-small 1.25 mm, 64x64x32 crops, V-Net width 12; gpu-full 0.625 mm, 112x112x80, width 16 on CUDA.
Writes benchmarks/results/<profile>/loop_throughput.json and .md.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from common import ROOT, benchmark_parser, publish

from SemiSupCardiacSegLib.training import train_step

LA_DIR = ROOT.parent / "shared" / "data" / "LA2018"
PROFILES = {
    "cpu-small": {"spacing": 1.25, "patch": (64, 64, 32), "n_filters": 12, "device": "cpu"},
    "gpu-full": {"spacing": 0.625, "patch": (112, 112, 80), "n_filters": 16, "device": "cuda"},
    "smoke": {"spacing": 2.5, "patch": (32, 32, 16), "n_filters": 2, "device": "cpu"},
}


def load_cases(prof: dict, smoke: bool):
    from SemiSupCardiacSegLib.data import find_cases, load_case
    from SemiSupCardiacSegLib.preprocessing import Preprocessing

    prep = Preprocessing(spacing=(prof["spacing"],) * 3)
    if not smoke and (LA_DIR / "train.list").is_file():
        names = (LA_DIR / "train.list").read_text().split()[:8]
        files = [c for n in names for c in find_cases(LA_DIR / "train" / f"{n}.h5")]
        cases = [load_case(c, prep, 2) for c in files]
        source = "LA2018 " + ", ".join(names)
    else:
        import tempfile

        from SemiSupCardiacSegLib.phantoms import make_la_phantom, write_phantom_h5

        with tempfile.TemporaryDirectory() as tmp:
            files = [
                write_phantom_h5(make_la_phantom(shape=(48, 44, 28), spacing=(2.0,) * 3, seed=i), f"{tmp}/p{i}.h5")
                for i in range(8)
            ]
            cases = [load_case(c, prep, 2) for f in files for c in find_cases(f)]
        source = "phantoms"
    for c in cases[4:]:  # the second four train as unlabeled
        c.label = None
    return cases, source


def run_loop(kind: str, method_name: str, cases, prof: dict, iterations: int, workers: int) -> dict:
    from torch.utils.data import DataLoader

    from SemiSupCardiacSegLib.data import CropDataset, TwoStreamBatchSampler
    from SemiSupCardiacSegLib.methods import get_method
    from SemiSupCardiacSegLib.sdm import multiclass_sdm

    torch.manual_seed(0)
    cfg = {
        "arch": "vnet",
        "network": {"in_channels": 1, "num_classes": 2, "n_filters": prof["n_filters"], "dropout": 0.5},
        "iterations": 6000,
        "method_params": {"disc_filters": 16} if method_name == "sassnet" else {},
    }
    method = get_method(method_name)(cfg).to(prof["device"])
    opts = {k: torch.optim.SGD(p, lr=0.01, momentum=0.9) for k, p in method.optimizer_groups().items()}
    total = iterations + 2
    sampler = TwoStreamBatchSampler(range(4), range(4, 8), 4, 2, total, seed=0)
    reference = kind == "reference"
    dataset = CropDataset(cases, prof["patch"], 2, augment=True, with_sdm=not reference)
    nw = 0 if reference else workers
    loader = DataLoader(
        dataset, batch_sampler=sampler, num_workers=nw, persistent_workers=nw > 0, prefetch_factor=2 if nw > 0 else None
    )
    sync = torch.cuda.synchronize if prof["device"] == "cuda" else (lambda: None)
    t_data = t_sdm = t_step = 0.0
    method.train()
    it = 0
    t_last = time.perf_counter()
    for batch in loader:
        t0 = time.perf_counter()
        if reference:  # the labeled rows' SDM targets, on the main process, every iteration
            labels = batch["label"].numpy()
            sdm = np.zeros((labels.shape[0], 1) + labels.shape[1:], np.float32)
            for b in range(2):
                sdm[b] = multiclass_sdm(labels[b], 2)
            batch["sdm"] = torch.from_numpy(sdm)
        t1 = time.perf_counter()
        batch = {k: v.to(prof["device"]) if torch.is_tensor(v) else v for k, v in batch.items()}
        batch["n_labeled"] = 2
        train_step(method, opts, batch, 3000)
        sync()
        t2 = time.perf_counter()
        if it >= 2:  # two warm-up iterations
            t_data += t0 - t_last
            t_sdm += t1 - t0
            t_step += t2 - t1
        it += 1
        t_last = time.perf_counter()
    n = max(1, it - 2)
    per_it = (t_data + t_sdm + t_step) / n
    return {
        "s_per_it": per_it,
        "data_share": t_data / n / per_it,
        "sdm_share": t_sdm / n / per_it,
        "step_share": t_step / n / per_it,
        "iterations": n,
        "workers": nw,
    }


def main(argv=None) -> int:
    p = benchmark_parser(__doc__)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--workers", type=int, default=1, help="DataLoader workers of the project's loop")
    args = p.parse_args(argv)
    torch.set_num_threads(1 if args.smoke else args.threads)
    prof = PROFILES["smoke" if args.smoke else args.profile]
    if prof["device"] == "cuda" and not torch.cuda.is_available():
        print("error: profile gpu-full needs CUDA", file=sys.stderr)
        return 2
    cases, source = load_cases(prof, args.smoke)
    iters = 2 if args.smoke else args.iterations
    rows = {}
    for m in ("supervised", "sassnet"):
        project = run_loop("project", m, cases, prof, iters, args.workers)
        reference = run_loop("reference", m, cases, prof, iters, args.workers)
        rows[f"{m} | project"] = project
        rows[f"{m} | reference loop"] = {**reference, "ratio_to_project": reference["s_per_it"] / project["s_per_it"]}
    if args.smoke:
        print(rows)
        return 0
    publish(
        args.profile,
        "loop_throughput",
        {**rows, "_source": source},
        ["method", "loop", "workers", "s / iteration", "data wait", "SDM targets", "step", "reference / project"],
        lambda k, v: (
            None
            if k.startswith("_")
            else [
                k,
                str(v["workers"]),
                f"{v['s_per_it']:.3f}",
                f"{100 * v['data_share']:.0f}%",
                f"{100 * v['sdm_share']:.0f}%",
                f"{100 * v['step_share']:.0f}%",
                f"{v['ratio_to_project']:.2f}" if "ratio_to_project" in v else "-",
            ]
        ),
        extra_lines=["", f"Cases: {source}."],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
