"""Seconds per training iteration of every registered method (networks + losses + optimizer steps).

    python benchmarks/train_speed.py [--profile cpu-small|gpu-full] [--steps 10] [--methods sassnet,uamt] [--smoke]

Profiles: cpu-small = the shipped CPU model's setting (V-Net width 12, batch 4 = 2 labeled + 2
unlabeled, 64x64x32 crops); gpu-full = the papers' setting (width 16, 112x112x80) on CUDA.
Random tensors stand in for data (data loading is timed separately in the training log), so the
figure is the method's own cost. Writes benchmarks/results/<profile>/train_speed.json and .md.
"""

from __future__ import annotations

import argparse
import sys
import time

from common import publish

import torch

from SemiSupCardiacSegLib.methods import METHODS, get_method
from SemiSupCardiacSegLib.sdm import signed_distance_map

PROFILES = {
    "cpu-small": {"n_filters": 12, "patch": (64, 64, 32), "device": "cpu", "disc_filters": 32},
    "gpu-full": {"n_filters": 16, "patch": (112, 112, 80), "device": "cuda", "disc_filters": 64},
    "smoke": {"n_filters": 2, "patch": (16, 16, 16), "device": "cpu", "disc_filters": 4},
}


def make_batch(patch, device, n=4, n_labeled=2) -> dict:
    g = torch.Generator().manual_seed(0)
    label = torch.zeros((n,) + tuple(patch), dtype=torch.long)
    x, y, z = (s // 4 for s in patch)
    label[:, x:3 * x, y:3 * y, z:3 * z] = 1
    sdm = torch.from_numpy(signed_distance_map(label[0].numpy().astype(bool)))[None, None].repeat(n, 1, 1, 1, 1)
    batch = {"image": torch.randn((n, 1) + tuple(patch), generator=g), "label": label, "sdm": sdm}
    batch = {k: v.to(device) for k, v in batch.items()}
    batch["n_labeled"] = n_labeled
    return batch


def time_method(name: str, prof: dict, steps: int) -> dict:
    torch.manual_seed(0)
    cfg = {"network": {"in_channels": 1, "num_classes": 2, "n_filters": prof["n_filters"], "dropout": 0.5},
           "iterations": 6000, "method_params": {"disc_filters": prof["disc_filters"]} if name == "sassnet" else {}}
    method = get_method(name)(cfg).to(prof["device"])
    opts = {k: torch.optim.SGD(p, lr=0.01, momentum=0.9) for k, p in method.optimizer_groups().items()}
    batch = make_batch(prof["patch"], prof["device"])
    method.train()
    times = []
    for it in range(steps + 2):  # two warm-up iterations
        sync = torch.cuda.synchronize if prof["device"] == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        losses, _ = method.training_step(batch, 3000)
        for k, loss in losses.items():
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            opts[k].step()
        method.after_step(it + 1)
        sync()
        if it >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    params = sum(p.numel() for p in method.model.parameters())
    return {"median_s_per_it": median, "its_per_s": 1.0 / median, "steps": steps, "model_params": params}


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
    publish(args.profile, "train_speed", rows, ["method", "s / iteration", "iterations / s", "inference params"],
            lambda k, v: [k, f"{v['median_s_per_it']:.2f}", f"{v['its_per_s']:.2f}", f"{v['model_params']:,}"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
