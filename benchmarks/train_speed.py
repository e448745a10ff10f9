"""Seconds per training iteration of every registered method (networks + losses + optimizer steps).

    python benchmarks/train_speed.py [--profile cpu-small|cpu-paper|gpu-full] [--steps 10] [--methods A,B] [--smoke]
    python benchmarks/train_speed.py --methods sassnet,sassnet+bcp     # NAME+bcp: with BCP's copy-paste added
    python benchmarks/train_speed.py --methods sassnet,sassnet@bf16    # NAME@bf16: bf16 autocast (training.precision)

Profiles: cpu-small = the shipped CPU models' settings (LA: V-Net width 12, batch 4 = 2 labeled + 2
unlabeled, 64x64x32 crops; cine: U-Net width 16, batch 8 = 4 + 4, 128x128 slices, 3 MC passes);
gpu-full = the papers' settings (V-Net width 16, 112x112x80; U-Net on 256x256 slices, batch 16,
10 MC passes) on CUDA; cpu-paper = the same settings on the CPU (what they would cost here).
A method's network (V-Net or 2D U-Net) is the one of its paper config.
Random tensors stand in for data (data loading is timed separately in the training log), so the
figure is the method's own cost. Writes benchmarks/results/<profile>/train_speed.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from common import publish
from method_comparison import BF16_SUFFIX, COPY_PASTE_SUFFIX

from SemiSupCardiacSegLib.config_files import CONFIGS, load_config
from SemiSupCardiacSegLib.methods import METHODS, get_method
from SemiSupCardiacSegLib.sdm import multiclass_sdm
from SemiSupCardiacSegLib.training import train_step

PROFILES = {
    "cpu-small": {
        "n_filters": 12,
        "patch": (64, 64, 32),
        "device": "cpu",
        "disc_filters": 32,
        "2d": {"n_filters": 16, "patch": (128, 128, 1), "batch": 8, "mc_passes": 3},
    },
    "gpu-full": {
        "n_filters": 16,
        "patch": (112, 112, 80),
        "device": "cuda",
        "disc_filters": 64,
        "2d": {"n_filters": 16, "patch": (256, 256, 1), "batch": 16, "mc_passes": 10},
    },
    "smoke": {
        "n_filters": 2,
        "patch": (16, 16, 16),
        "device": "cpu",
        "disc_filters": 4,
        "2d": {"n_filters": 2, "patch": (32, 32, 1), "batch": 4, "mc_passes": 2},
    },
}

#: What the papers' settings cost on this project's CPU (the LA target's profile: 0.625 mm crops).
PROFILES["cpu-paper"] = {**PROFILES["gpu-full"], "device": "cpu"}


def make_batch(patch, device, n=4, n_labeled=2, num_classes=2) -> dict:
    g = torch.Generator().manual_seed(0)
    label = torch.zeros((n,) + tuple(patch), dtype=torch.long)
    x, y, z = (max(1, s // 4) for s in patch)
    zs = slice(z, 3 * z) if patch[2] > 1 else slice(None)
    for c in range(1, num_classes):  # nested boxes: classes 1 .. K-1
        label[:, (c - 1) * x // 2 + x : 3 * x - (c - 1) * x // 2, y : 3 * y, zs] = c
    sdm = torch.from_numpy(multiclass_sdm(label[0].numpy(), num_classes))[None].repeat(n, 1, 1, 1, 1)
    batch = {"image": torch.randn((n, 1) + tuple(patch), generator=g), "label": label, "sdm": sdm}
    batch = {k: v.to(device) for k, v in batch.items()}
    batch["n_labeled"] = n_labeled
    return batch


def time_method(variant: str, prof: dict, steps: int) -> dict:
    """Median seconds per iteration of ``variant``: a method name, NAME+bcp for the method with
    BCP's copy-paste (config ``copy_paste``) added, and either with @bf16 for its steps under bf16
    autocast (config ``precision``)."""
    torch.manual_seed(0)
    precision = "bfloat16" if variant.endswith(BF16_SUFFIX) else "float32"
    with_cp = variant.removesuffix(BF16_SUFFIX).endswith(COPY_PASTE_SUFFIX)
    name = variant.removesuffix(BF16_SUFFIX).removesuffix(COPY_PASTE_SUFFIX)
    paper = load_config(CONFIGS / f"{name}.json")
    params = {k: v for k, v in paper.get("method_params", {}).items() if k in ("disc_filters", "mc_passes")}
    if "disc_filters" in params:
        params["disc_filters"] = prof["disc_filters"]
    if paper.get("arch") == "unet2d":
        p2 = prof["2d"]
        net = {**paper["network"], "n_filters": p2["n_filters"]}
        if "mc_passes" in params:
            params["mc_passes"] = p2["mc_passes"]
        cfg = {"arch": "unet2d", "network": net, "iterations": 6000, "method_params": params}
        patch, n, n_lab, k = p2["patch"], p2["batch"], p2["batch"] // 2, net["num_classes"]
    else:
        net = {**paper.get("network", {}), "num_classes": 2, "n_filters": prof["n_filters"]}
        cfg = {"arch": paper.get("arch", "vnet"), "network": net, "iterations": 6000, "method_params": params}
        patch, n, n_lab, k = prof["patch"], 4, 2, 2
    if with_cp:
        cfg["copy_paste"] = {}
    method = get_method(name)(cfg).to(prof["device"])
    opts = {k: torch.optim.SGD(p, lr=0.01, momentum=0.9) for k, p in method.optimizer_groups().items()}
    batch = make_batch(patch, prof["device"], n, n_lab if method.uses_unlabeled else n, k)
    method.train()
    times = []
    for it in range(steps + 2):  # two warm-up iterations
        sync = torch.cuda.synchronize if prof["device"] == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        train_step(method, opts, batch, 3000, precision=precision)
        sync()
        if it >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    return {
        "median_s_per_it": median,
        "its_per_s": 1.0 / median,
        "steps": steps,
        "arch": cfg["arch"],
        "patch": list(patch),
        "batch": n,
        "precision": precision,
        "model_params": sum(p.numel() for p in method.model.parameters()),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu-small", choices=sorted(PROFILES))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--methods", default=",".join(sorted(METHODS)))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite; writes nothing")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    prof = PROFILES["smoke" if args.smoke else args.profile]
    if prof["device"] == "cuda" and not torch.cuda.is_available():
        print("error: profile gpu-full needs CUDA", file=sys.stderr)
        return 2
    rows = {m: time_method(m, prof, 1 if args.smoke else args.steps) for m in args.methods.split(",")}
    if args.smoke:
        print(rows)
        return 0
    publish(
        args.profile,
        "train_speed",
        rows,
        ["method", "network", "crop x batch", "s / iteration", "iterations / s", "inference params"],
        lambda k, v: [
            k,
            v["arch"],
            "x".join(map(str, v["patch"])) + f" x {v['batch']}",
            f"{v['median_s_per_it']:.2f}",
            f"{v['its_per_s']:.2f}",
            f"{v['model_params']:,}",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
