"""Seconds and peak memory of `segment` (MC dropout) on a full-size 576x576x88 volume and a real LA case.

    python benchmarks/inference_memory.py [--profile cpu-small] [--mc-samples 10] [--model la] [--smoke]

Each measurement runs in a fresh child process so its peak resident memory (ru_maxrss) is its own.
Writes benchmarks/results/<profile>/inference_memory.json and .md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from common import ROOT, publish

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np, torch
torch.set_num_threads({threads})
from SemiSupCardiacSegLib.checkpoint import load_model
from SemiSupCardiacSegLib.inference import predict_volume
from SemiSupCardiacSegLib.preprocessing import Preprocessing
from SemiSupCardiacSegLib.volume import Volume
from SemiSupCardiacSegLib.phantoms import make_la_phantom
shape = tuple({shape})
ph = make_la_phantom(shape=shape, seed=3)
vol = Volume(ph.image, ph.spacing)
model, meta = load_model({model!r})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
pred = predict_volume(model, vol, Preprocessing.from_dict(meta["preprocessing"]), tuple(meta["patch_size"]),
                      int(meta["network"]["num_classes"]), mc_samples={mc}, device="cpu")
sec = time.perf_counter() - t
print(json.dumps({{"seconds": sec, "timings": pred.timings, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_mb": base / 1024, "shape": list(shape)}}))
"""


def run_child(shape, mc: int, model: str, threads: int) -> dict:
    code = CHILD.format(root=str(ROOT), shape=list(shape), mc=mc, model=model, threads=threads)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--profile", default="cpu-small")
    p.add_argument("--mc-samples", type=int, default=10)
    p.add_argument("--model", default="la")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny run for the test suite; writes nothing")
    args = p.parse_args(argv)
    if args.smoke:
        print(run_child((48, 40, 24), 2, args.model, 1))
        return 0
    rows = {}
    for name, shape in {"LA-sized 176x144x88": (176, 144, 88), "full 576x576x88": (576, 576, 88)}.items():
        for mc in (1, args.mc_samples):
            rows[f"{name}, N={mc}"] = run_child(shape, mc, args.model, args.threads)
    publish(args.profile, "inference_memory", rows, ["input, MC samples", "seconds", "network s", "peak RSS MB"],
            lambda k, v: [k, f"{v['seconds']:.1f}", f"{v['timings']['network_s']:.1f}", f"{v['peak_rss_mb']:.0f}"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
