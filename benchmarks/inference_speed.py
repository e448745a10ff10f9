"""Inference speed and peak memory of the uncertainty path, against a plain pass, naive MC dropout,
MONAI's sliding window and the reference code's dense window.

    python benchmarks/inference_speed.py [--profile cpu-small] [--mc-samples 10] [--model la] [--smoke]
    python benchmarks/inference_speed.py --model cine   # a slice model: inference_speed_cine.json / .md

Inputs: a real LA case (the first of the 12 held out of the shipped LA model, from ../shared, else an
LA-sized phantom), the same case padded into a 576x576 field (``phantoms.pad_into_field``) and a
576x576x88 phantom volume at 0.625 mm (the LA2018 scanner grid). Where the input has a reference
label: Dice, and the foreground farther than ``FAR_MM`` from it (mL; also before the
largest-component cleanup). Timed, each in
a fresh child process that reads the input from a file (its peak RSS, VmHWM, is then its own):
  (a) one deterministic sliding-window pass (overlap 0.5, no TTA);
  (b) naive MC dropout: N full network passes (encoder and decoder) per window;
  (c) the project's uncertainty path: encoder once per window, the dropout-bearing decoder N times;
  (c, head-only) ``mc_scope = "head"``: encoder and decoder once, only the last dropout and the
  1x1 heads sampled N times (an approximate posterior; its quality: uncertainty_quality.py --mc-scope head);
  (c, seed 1) (c) with other dropout masks;
  segment, whole volume: what ``segment`` ran before coarse localization (N MC passes shared out
  over the flip TTA, the whole volume);
  segment: what ``segment`` runs by default: on a large field, a coarse pass finds the atrium and
  the full pass runs on a crop around it (``inference.localize``).
Seconds are end to end (resampling to model space and back included) and of the sliding window
alone ("network s"), the best of 3 runs in the child for the LA case (1 for the large volume).
On the LA case, also in model space: MONAI's ``sliding_window_inference``
(installed for this benchmark only: ``pip install monai``; the row is skipped without it) on the
same network, window and overlap, and the reference code's window stride (18/18/4 voxels at
0.625 mm with 112x112x80 windows; the same stride in mm for the shipped model's grid), each
against our deterministic pass in the same process: seconds and the ratio. Finally, window overlap
vs accuracy: deterministic Dice on held-out LA cases and seconds per case for several overlaps.
Writes benchmarks/results/<profile>/inference_speed.json and .md.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, benchmark_parser, publish, speed_probe

LA_DIR = ROOT.parent / "shared" / "data" / "LA2018"
REFERENCE_STRIDE_MM = (18 * 0.625, 18 * 0.625, 4 * 0.625)  # kleinzcy/SASSnet test_single_case stride_xy 18, stride_z 4


def _hwm_mb() -> float:
    """VmHWM: this process's peak RSS (unlike ru_maxrss, not inherited across fork/exec)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class FullPass(torch.nn.Module):
    """Wraps a network so that the MC window function's 'decode' is a full forward pass: the
    naive MC dropout baseline (b), where every sample re-runs the encoder too."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def encode(self, x):
        return x

    def decode(self, x):
        return self.inner(x)


def child(mode: str, path: str, model_name: str, mc: int, threads: int, device: str = "cpu") -> dict:
    """One measurement on the volume file ``path`` (run in a fresh process)."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from SemiSupCardiacSegLib.checkpoint import load_model
    from SemiSupCardiacSegLib.inference import InferenceSettings, Predictor
    from SemiSupCardiacSegLib.io import read_volume

    vol = read_volume(path)
    net, meta = load_model(model_name)
    base = _hwm_mb()
    kwargs = {  # every path on the whole volume (localize False) but ``segment``, today's default
        "a": dict(mc_samples=1, tta=False, localize=False),
        "b": dict(mc_samples=mc, tta=False, mc_scope="decoder", localize=False),
        "c": dict(mc_samples=mc, tta=False, mc_scope="decoder", localize=False),
        "c_seed1": dict(mc_samples=mc, tta=False, mc_scope="decoder", seed=1, localize=False),
        "c_head": dict(mc_samples=mc, tta=False, mc_scope="head", localize=False),
        "segment_whole": dict(mc_samples=mc, tta=True, localize=False),
        "segment": dict(mc_samples=mc, tta=True),
        # the checkpoint's TTA and MC with the masks from the MC mean (a ``deterministic_mask`` model's other way)
        "segment_mc_masks": dict(mc_samples=mc, tta=True, deterministic_mask=False),
    }[mode]
    # (b): every MC sample is a full pass: the network wrapped
    predictor = Predictor(
        FullPass(net) if mode == "b" else net, meta, InferenceSettings.from_meta(meta, device=device, **kwargs)
    )
    # Best of a few runs on inputs that take seconds: the first run of a process pays one-off costs
    # (allocator growth, oneDNN kernel selection) that measured up to 1 s on the LA case.
    repeats = 3 if vol.array.size < 10_000_000 else 1
    sec = net_s = None
    for _ in range(repeats):
        t = time.perf_counter()
        with torch.inference_mode():
            pred = predictor.predict(vol)
        dt = time.perf_counter() - t
        if sec is None or dt < sec:
            sec, net_s = dt, pred.timings.network_s
    peak = _hwm_mb()  # before the report and the saved maps below, which are not the path's cost
    if mode in NOISE_MODES:  # the maps, for ``mc_noise`` (compared in the parent)
        np.savez(f"{path}.{mode}.npz", labels=pred.labels.array, entropy=pred.entropy.array, mi=pred.mutual_info.array)
    from SemiSupCardiacSegLib.reporting import segmentation_report

    score_name = meta.quality.score if meta.quality is not None else "mean_boundary_mutual_info"
    report = segmentation_report(pred, meta)
    truth = {}
    if Path(f"{path}.label.nrrd").is_file():  # the input's reference: Dice, and structure far from it
        from scipy import ndimage

        from SemiSupCardiacSegLib.io import read_label
        from SemiSupCardiacSegLib.metrics import dice

        ref = read_label(f"{path}.label.nrrd").array > 0
        far = ndimage.distance_transform_edt(~ref, sampling=vol.spacing) > FAR_MM
        seg = pred.labels.array > 0
        argmax = pred.probabilities.array.argmax(0) > 0  # before the largest-component cleanup
        vox_ml = float(np.prod(vol.spacing)) / 1000.0
        truth = {
            "dice": dice(seg, ref),
            "far_ml": float((seg & far).sum() * vox_ml),
            "far_ml_before_cleanup": float((argmax & far).sum() * vox_ml),
        }
    writing = output_writing(pred, report) if mode in WRITE_MODES else {}
    return {
        "writing": writing,
        "seconds": sec,
        "network_s": net_s,
        "repeats": repeats,
        "peak_rss_mb": peak,
        "rss_before_mb": base,
        "shape": list(vol.shape),
        "foreground_voxels": int((pred.labels.array > 0).sum()),
        "mean_entropy": float(np.mean(pred.entropy.array)),
        "quality_score": {score_name: {k: v.get(score_name) for k, v in report["structures"].items()}},
        "localization": report["localization"],
        **truth,
    }


#: The modes whose output set is also written at each compression level (``output_writing``).
WRITE_MODES = ("segment",)
#: gzip levels compared: ITK's default (-1), the fastest (1), none (0).
COMPRESSION_LEVELS = (-1, 1, 0)


def output_writing(pred, report: dict) -> dict:
    """Seconds and MB of writing the whole output set (``reporting.write_output_files``) per gzip level."""
    import shutil

    from SemiSupCardiacSegLib.reporting import write_output_files

    rows = {}
    for level in COMPRESSION_LEVELS:
        folder = Path(tempfile.mkdtemp())
        try:
            t = time.perf_counter()
            paths = write_output_files(pred, report, folder, compression_level=level)
            rows[str(level)] = {
                "seconds": time.perf_counter() - t,
                "mb": sum(p.stat().st_size for p in paths) / 1e6,
            }
        finally:
            shutil.rmtree(folder)
    return rows


def startup(path: Path, model: str, threads: int) -> dict:
    """Seconds from starting ``segment`` (N = 2, progress lines) to its first progress line and to its
    first progress line after the model loaded (where the first line came before the start-up work
    was reordered), and to its end."""
    out = Path(tempfile.mkdtemp()) / "out"
    argv = [sys.executable, "-m", "SemiSupCardiacSegLib", "segment", str(path), "--out", str(out)]
    argv += ["--model", model, "--mc-samples", "2", "--progress-lines", "--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    lines = []
    for line in proc.stdout:
        if line.startswith("PROGRESS"):
            lines.append((time.perf_counter() - t0, float(line.split()[1])))
    proc.wait()
    after_load = next((t for t, f in lines if f > 0), None)
    return {
        "first_line_s": lines[0][0] if lines else None,
        "first_work_line_s": after_load,
        "total_s": time.perf_counter() - t0,
        "returncode": proc.returncode,
    }


def segment_before_after(path: Path, before: Path, model: str, threads: int, repeats: int) -> dict:
    """``segment`` end to end (its defaults, the command a user types), this tree against the
    checkout ``before`` (the commit the issue measured), alternated in one run: wall seconds of the
    whole command (start-up, inference, writing; best of ``repeats``) and, where ``path`` has a
    reference label, Dice of each tree's segmentation.nrrd."""
    import os
    import shutil

    import numpy as np

    from SemiSupCardiacSegLib.io import read_volume
    from SemiSupCardiacSegLib.metrics import dice

    ref = Path(f"{path}.label.nrrd")
    trees = {"before": before.resolve(), "after": ROOT}
    for key, tree in trees.items():
        _check_tree_imports_itself(tree, key)
    rows: dict[str, dict] = {k: {"runs_s": []} for k in trees}
    for _ in range(repeats):
        for key, tree in trees.items():
            out = Path(tempfile.mkdtemp()) / "out"
            argv = [sys.executable, "-m", "SemiSupCardiacSegLib", "segment", str(path), "--out", str(out)]
            argv += ["--model", model, "--threads", str(threads), "--quiet"]
            env = {**os.environ, "PYTHONPATH": str(tree)}
            t = time.perf_counter()
            done = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - t
            if done.returncode != 0:
                raise RuntimeError(f"segment ({key}, {tree}) on {path.name} failed: {done.stderr[-2000:]}")
            rows[key]["runs_s"].append(seconds)
            if ref.is_file() and "dice" not in rows[key]:
                labels = read_volume(out / "segmentation.nrrd").array > 0
                rows[key]["dice"] = dice(labels, np.asarray(read_volume(ref).array) > 0)
            shutil.rmtree(out.parent)
    for row in rows.values():
        row["seconds"] = min(row["runs_s"])
    rows["ratio_before_to_after"] = rows["before"]["seconds"] / rows["after"]["seconds"]
    return rows


def _check_tree_imports_itself(tree: Path, key: str) -> None:
    """Fail unless ``python -m SemiSupCardiacSegLib`` run in ``tree`` imports ``tree``'s own package
    (an editable install of another checkout would otherwise answer silently)."""
    import os

    probe = "import SemiSupCardiacSegLib, pathlib; print(pathlib.Path(SemiSupCardiacSegLib.__file__).resolve())"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tree, env=env, capture_output=True, text=True)
    found = Path(done.stdout.strip()) if done.returncode == 0 else None
    if found is None or found.parent.parent != tree:
        raise RuntimeError(f"{tree} ({key}): not a SemiSupCardiacSeg checkout (its package imports from {found})")


def _tree_commit(tree: Path) -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


#: Foreground farther than this (mm) from the reference structure counts as a far false positive.
FAR_MM = 10.0


#: The modes whose maps ``mc_noise`` compares: two MC draws of the same path.
NOISE_MODES = ("c", "c_seed1")


def mc_noise(path: Path) -> dict:
    """What a second MC draw changes (c vs c_seed1, other dropout masks): label agreement, total MI
    and total entropy of the second map relative to the first, and the 99.9th percentile of the
    voxelwise |MI difference| (nats)."""
    import numpy as np

    fa, fb = (Path(f"{path}.{m}.npz") for m in NOISE_MODES)
    if not (fa.is_file() and fb.is_file()):
        return {}
    x, y = np.load(fa), np.load(fb)
    return {
        "label_agreement": float((x["labels"] == y["labels"]).mean()),
        "mi_total_ratio": float(y["mi"].sum() / max(x["mi"].sum(), 1e-12)),
        "entropy_total_ratio": float(y["entropy"].sum() / max(x["entropy"].sum(), 1e-12)),
        "mi_abs_diff_p999": float(np.quantile(np.abs(y["mi"] - x["mi"]), 0.999)),
    }


def run_child(mode: str, path: Path, model: str, mc: int, threads: int, device: str = "cpu") -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            mode,
            str(path),
            "--model",
            model,
            "--mc-samples",
            str(mc),
            "--threads",
            str(threads),
            "--device",
            device,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{mode} on {path.name} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def model_space_comparisons(image_volume, model_name: str, threads: int, repeats: int = 1) -> dict:
    """In model space, same process: ours (deterministic) vs MONAI, the exported backends and the
    reference stride; each timing the best of ``repeats`` runs, the ways alternated within each
    repeat (so a load that comes and goes falls on all of them; the first run of a process pays
    one-off allocations, so every way is also run once untimed first)."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from SemiSupCardiacSegLib.checkpoint import load_model
    from SemiSupCardiacSegLib.inference import InferenceSettings, predict_model_space
    from SemiSupCardiacSegLib.networks.fold import fold_batchnorm
    from SemiSupCardiacSegLib.preprocessing import to_model_space

    net, meta = load_model(model_name)
    net = fold_batchnorm(net)  # the network as Predictor runs it
    prep = meta.preprocessing
    image = to_model_space(image_volume, prep).array.astype(np.float32)
    patch = meta.patch_size
    spacing = prep.model_spacing(image_volume.shape, image_volume.spacing)
    ours_name = "ours, overlap 0.5"
    # name -> () -> foreground-class probabilities (C, X, Y, Z) as numpy
    ways = {ours_name: lambda: predict_model_space(net, image, InferenceSettings(patch, device="cpu")).probs}
    rows = {ours_name: {"model_shape": list(image.shape)}}
    try:
        from monai.inferers import sliding_window_inference
    except ImportError:
        rows["MONAI sliding_window_inference"] = {"skipped": "monai not installed (pip install monai)"}
    else:
        x = torch.from_numpy(image)[None, None]

        def both_heads(t):  # the outputs ours blends: probabilities and SDM
            out = net(t)
            return torch.softmax(out["seg"], 1), out["sdm"]

        name = "MONAI sliding_window_inference (gaussian, overlap 0.5, batch 2; probabilities + SDM)"
        ways[name] = lambda: sliding_window_inference(
            x, patch, 2, both_heads, overlap=0.5, mode="gaussian", sigma_scale=0.125
        )[0][0].numpy()
        rows[name] = {}
    with tempfile.TemporaryDirectory() as tmp:
        exported, skipped = exported_backends(net, image, patch, Path(tmp))
        rows.update(skipped)
        for name, fn in exported.items():
            ways[name], rows[name] = fn, {}
        stride = [max(1, round(mm / s)) for mm, s in zip(REFERENCE_STRIDE_MM, spacing)]
        ref_settings = InferenceSettings(
            patch, overlap=tuple(1.0 - st / p for st, p in zip(stride, patch)), device="cpu"
        )
        ref_name = f"reference stride {stride[0]}/{stride[1]}/{stride[2]} voxels (18/18/4 at 0.625 mm)"
        ways[ref_name] = lambda: predict_model_space(net, image, ref_settings).probs
        rows[ref_name] = {"stride_voxels": stride}
        with torch.inference_mode():
            labels = {name: fn().argmax(0) for name, fn in ways.items()}  # untimed: warm-up and agreement
            best: dict[str, float] = {}
            for _ in range(repeats):
                for name, fn in ways.items():
                    t = time.perf_counter()
                    fn()
                    best[name] = min(best.get(name, math.inf), time.perf_counter() - t)
    for name in ways:
        rows[name]["seconds"] = best[name]
        rows[name]["ratio"] = best[name] / best[ours_name]
        if name not in (ours_name, ref_name):
            rows[name]["label_agreement"] = float((labels[name] == labels[ours_name]).mean())
    return rows


class _ProbsAndSdm(torch.nn.Module):
    """The network's deterministic window outputs as a pair of tensors (what ONNX export traces)."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        return torch.softmax(out["seg"], 1), out["sdm"]


def exported_backends(net, image, patch, tmp: Path) -> tuple[dict, dict]:
    """The deterministic model-space pass with the network run by ONNX Runtime and by OpenVINO (the
    network exported to ``tmp``/net.onnx with batch norm folded, fixed window batch 2; everything
    else is our sliding window) -> ({name: () -> probabilities (C, X, Y, Z)}, {name: skipped row}).
    Skipped where not installed (``pip install onnx onnxruntime openvino``, for this benchmark only)."""
    import numpy as np

    from SemiSupCardiacSegLib.inference import sliding_window
    from SemiSupCardiacSegLib.networks.fold import fold_batchnorm

    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        return {}, {
            "ONNX Runtime / OpenVINO": {"skipped": "onnx not installed (pip install onnx onnxruntime openvino)"}
        }
    batch = 2
    path = str(tmp / "net.onnx")
    with torch.no_grad():
        torch.onnx.export(
            _ProbsAndSdm(fold_batchnorm(net)).eval(),
            (torch.zeros((batch, 1, *patch)),),
            path,
            input_names=["x"],
            output_names=["probs", "sdm"],
            dynamo=False,
            opset_version=17,
        )
    runners, skipped = {}, {}
    try:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        runners["ONNX Runtime (CPU)"] = lambda x: sess.run(None, {"x": x})
    except ImportError:
        skipped["ONNX Runtime (CPU)"] = {"skipped": "onnxruntime not installed"}
    try:
        import openvino as ov

        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads()})
        runners["OpenVINO (CPU)"] = lambda x: [np.asarray(o) for o in compiled(x).values()]
    except ImportError:
        skipped["OpenVINO (CPU)"] = {"skipped": "openvino not installed"}
    ways = {}
    for name, run in runners.items():

        def window_fn(x: torch.Tensor, run=run) -> dict:
            n = x.shape[0]
            xs = x.numpy()
            if n < batch:  # the exported graph has a fixed batch: pad the last one
                xs = np.concatenate([xs, np.zeros((batch - n, *xs.shape[1:]), xs.dtype)])
            probs, sdm = run(xs)
            return {"probs": torch.from_numpy(probs[:n]), "sdm": torch.from_numpy(sdm[:n])}

        ways[name] = lambda fn=window_fn: sliding_window(fn, image, patch, 0.5, batch, "cpu")["probs"]
    return ways, skipped


def overlap_sweep(cases: list, model_name: str, threads: int, overlaps=(0.0, 0.25, 0.5, 0.75)) -> dict:
    """Deterministic Dice and seconds per case for each window overlap (held-out LA cases)."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from SemiSupCardiacSegLib.checkpoint import load_model
    from SemiSupCardiacSegLib.inference import InferenceSettings, Predictor
    from SemiSupCardiacSegLib.io import read_h5_case
    from SemiSupCardiacSegLib.metrics import dice

    net, meta = load_model(model_name)
    data = [read_h5_case(c) for c in cases]
    rows = {}
    for ov in overlaps:
        dices, secs = [], []
        predictor = Predictor(
            net, meta, InferenceSettings.from_meta(meta, mc_samples=1, tta=False, overlap=ov, device="cpu")
        )
        for image, label in data:
            t = time.perf_counter()
            pred = predictor.predict(image)
            secs.append(time.perf_counter() - t)
            dices.append(dice(pred.labels.array == 1, label.array == 1))
        rows[f"overlap {ov}"] = {
            "dice_mean": float(np.mean(dices)),
            "dice_std": float(np.std(dices)),
            "seconds_per_case": float(np.mean(secs)),
            "n_cases": len(data),
        }
    return rows


def held_out_cases(model_name: str, n: int) -> list[Path]:
    from SemiSupCardiacSegLib.checkpoint import load_model

    if not (LA_DIR / "train").is_dir():
        return []
    _, meta = load_model(model_name)
    names = meta.training_data.get("validation_cases") or []
    return [LA_DIR / "train" / f"{c}.h5" for c in names if (LA_DIR / "train" / f"{c}.h5").is_file()][:n]


def _localization_cell(loc: dict | None) -> str:
    if not loc:
        return "-"
    where = "whole volume" if loc["box"] is None else "crop " + "x".join(str(b - a) for a, b in loc["box"])
    return f"{where}, coarse {loc['coarse_s']:.1f} s"


def _score_cell(row: dict) -> str:
    """The quality-flag score per structure of one path's prediction, e.g. 'left atrium 0.0123'."""
    per = next(iter(row.get("quality_score", {}).values()), {})
    return ", ".join(f"{k} {v:.4f}" for k, v in per.items() if v is not None) or "-"


CINE_MODES = ("a", "segment_mc_masks", "segment")
CINE_LABELS = {
    "a": "(a) deterministic pass, no TTA",
    "segment_mc_masks": "masks from the MC mean: N MC samples shared over the checkpoint's TTA",
    "segment": "segment default: the same N samples + one dropout-off pass per TTA transform for the masks",
}


def cine_frames(smoke: bool, tmp: Path, n: int = 2) -> list[tuple[str, Path]]:
    """(row name, NRRD file with ``.label.nrrd`` beside) of the first ``n`` ACDC val.list frames (an ED and
    its ES), else of a cine phantom frame (``--smoke`` always takes the phantom)."""
    from SemiSupCardiacSegLib.io import read_h5_case, write_volume
    from SemiSupCardiacSegLib.volume import Volume

    acdc = ROOT.parent / "shared" / "data" / "ACDC"
    pairs = []
    if not smoke and (acdc / "val.list").is_file():
        for name in (acdc / "val.list").read_text().split()[:n]:
            pairs.append((name, *read_h5_case(acdc / "val" / f"{name}.h5")))
    else:
        from SemiSupCardiacSegLib.cine_phantoms import make_cine_phantom

        ph = make_cine_phantom(seed=5, shape=(64, 64, 4))
        pairs.append(("cine phantom", Volume(ph.image, ph.spacing), Volume(ph.label, ph.spacing)))
    paths = []
    for i, (name, image, label) in enumerate(pairs):
        path = write_volume(image, tmp / f"cine{i}.nrrd")
        write_volume(label, Path(f"{path}.label.nrrd"))
        paths.append((f"{name} {'x'.join(map(str, image.shape))}", path))
    return paths


def cine_main(args) -> int:
    """``--model cine``: seconds per cine frame of the three ways above, each in a fresh child,
    side by side on the same frames (inference_speed_cine.json / .md)."""
    mc = 2 if args.smoke else args.mc_samples
    threads = 1 if args.smoke else args.threads
    result = {"mc_samples": mc, "cpu_probe_s_start": round(speed_probe(), 4), "paths": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in cine_frames(args.smoke, Path(tmp)):
            rows = {m: run_child(m, path, args.model, mc, threads, args.device) for m in CINE_MODES}
            for m in CINE_MODES:
                rows[m]["ratio_to_a"] = rows[m]["seconds"] / rows["a"]["seconds"]
                rows[m]["ratio_to_mc_masks"] = rows[m]["seconds"] / rows["segment_mc_masks"]["seconds"]
            result["paths"][name] = rows
    result["cpu_probe_s_end"] = round(speed_probe(), 4)
    if args.smoke:
        print(json.dumps(result)[:2000])
        return 0
    flat = {f"{name} | {CINE_LABELS[m]}": v for name, rows in result["paths"].items() for m, v in rows.items()}
    publish(
        args.profile,
        "inference_speed_cine",
        {**flat, "_details": result},
        ["frame", "path", "seconds", "network s", "ratio to (a)", "ratio to MC-mean masks", "peak RSS MB", "Dice"],
        lambda k, v: (
            None
            if k == "_details"
            else [
                *k.split(" | "),
                f"{v['seconds']:.2f}",
                f"{v['network_s']:.2f}",
                f"{v['ratio_to_a']:.2f}",
                f"{v['ratio_to_mc_masks']:.2f}",
                f"{v['peak_rss_mb']:.0f}",
                f"{v['dice']:.4f}" if "dice" in v else "-",
            ]
        ),
        extra_lines=[
            "",
            f"N = {mc} MC samples, {threads} thread(s), best of 3 runs per child; Dice of all structures together "
            "against the frame's reference. Machine speed probe (`common.speed_probe`): "
            f"{result['cpu_probe_s_start']:.4f} s at the start, {result['cpu_probe_s_end']:.4f} s at the end.",
        ],
    )
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        import argparse

        p = argparse.ArgumentParser()
        p.add_argument("mode")
        p.add_argument("path")
        p.add_argument("--model", default="la")
        p.add_argument("--mc-samples", type=int, default=10)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--device", default="cpu")
        a = p.parse_args(argv[1:])
        print(json.dumps(child(a.mode, a.path, a.model, a.mc_samples, a.threads, a.device)))
        return 0
    p = benchmark_parser(__doc__)
    p.add_argument("--mc-samples", type=int, default=10)
    p.add_argument("--model", default="la")
    p.add_argument("--sweep-cases", type=int, default=4, help="held-out LA cases in the overlap sweep")
    p.add_argument(
        "--device", default="cpu", help="cpu, or cuda for the gpu-full profile (peak RSS is then host memory)"
    )
    p.add_argument(
        "--before",
        type=Path,
        default=None,
        help="a checkout of an earlier commit (git worktree add ../before COMMIT): segment end to end there "
        "and here, alternated in this run",
    )
    args = p.parse_args(argv)
    from SemiSupCardiacSegLib.checkpoint import load_model

    if load_model(args.model)[1].patch_size[-1] == 1:  # a slice model (cine): its own frames and paths
        return cine_main(args)
    from SemiSupCardiacSegLib.io import read_h5_case, write_volume
    from SemiSupCardiacSegLib.phantoms import make_la_phantom, pad_into_field
    from SemiSupCardiacSegLib.volume import Volume

    mc = 2 if args.smoke else args.mc_samples
    threads = 1 if args.smoke else args.threads
    held = [] if args.smoke else held_out_cases(args.model, args.sweep_cases)
    torch.set_num_threads(threads)
    result = {
        "mc_samples": mc,
        "cpu_probe_s_start": round(speed_probe(), 4),
        "inputs": {},
        "paths": {},
        "model_space": {},
        "overlap_sweep": {},
    }  # the environment's cpu_probe_s is read at the end
    with tempfile.TemporaryDirectory() as tmp:
        inputs, refs = {}, {}
        if held:
            image, label = read_h5_case(held[0])
            name = f"real LA case {held[0].stem} {'x'.join(map(str, image.shape))}"
            inputs[name], refs[name] = image, label
            name = f"real LA case {held[0].stem} padded into 576x576x{image.shape[2]}"
            inputs[name], refs[name] = pad_into_field(image, label, (576, 576, image.shape[2]))
        elif not args.smoke:
            ph = make_la_phantom(shape=(176, 144, 88), spacing=(0.625,) * 3, seed=3)
            inputs["LA-sized phantom 176x144x88"] = Volume(ph.image, ph.spacing)
        shape = (48, 40, 24) if args.smoke else (576, 576, 88)
        ph = make_la_phantom(shape=shape, spacing=(0.625,) * 3 if not args.smoke else (2.0,) * 3, seed=4)
        name = f"phantom {'x'.join(map(str, shape))}"
        inputs[name], refs[name] = Volume(ph.image, ph.spacing), Volume(ph.label, ph.spacing)
        all_modes = ("a", "b", "c", "c_seed1", "c_head", "segment_whole", "segment")
        for name, vol in inputs.items():
            path = write_volume(vol, Path(tmp) / f"{len(result['paths'])}.nrrd")
            if name in refs:
                write_volume(refs[name], Path(f"{path}.label.nrrd"))
            if args.smoke:
                modes = ("a", "c", "c_head", "segment")
            elif "padded" in name:  # the MC variants are measured on the phantom of the same size
                modes = ("a", "segment_whole", "segment")
            else:
                modes = all_modes
            rows = {m: run_child(m, path, args.model, mc, threads, args.device) for m in modes}
            for m in modes:
                rows[m]["ratio_to_a"] = rows[m]["seconds"] / rows["a"]["seconds"]
                rows[m]["network_ratio_to_a"] = rows[m]["network_s"] / rows["a"]["network_s"]
            result["paths"][name] = rows
            if all(m in modes for m in NOISE_MODES):
                result.setdefault("mc_noise", {})[name] = mc_noise(path)
            if not result.get("startup"):
                result["startup"] = startup(path, args.model, threads)
            if args.before is not None:
                result.setdefault("before_after", {"before_commit": _tree_commit(args.before), "inputs": {}})
                result["before_after"]["inputs"][name] = segment_before_after(
                    path, args.before, args.model, threads, repeats=1 if "576" in name else 2
                )
        first = next(iter(inputs))
        result["model_space"] = model_space_comparisons(
            inputs[first], args.model, threads, repeats=1 if args.smoke else 3
        )
        if held:
            result["overlap_sweep"] = overlap_sweep(held, args.model, threads)
    if args.smoke:
        print(json.dumps(result)[:2000])
        return 0
    labels = {
        "a": "(a) deterministic pass",
        "b": f"(b) naive MC, N={mc}",
        "c": f"(c) encoder once + N={mc} decoder passes",
        "c_head": f"(c) head-only MC: decoder once + N={mc} samples of the last dropout and the heads",
        "c_seed1": "(c) again, other dropout masks (seed 1)",
        "segment_whole": f"segment, whole volume (before localization): N={mc} shared over flip TTA",
        "segment": f"segment default: localized, N={mc} shared over flip TTA",
    }
    flat = {}
    for name, rows in result["paths"].items():
        for m, v in rows.items():
            flat[f"{name} | {labels[m]}"] = v
    extra = [
        "",
        "Model space, same process (seconds of the sliding window, best of 3 with the ways alternated after "
        "one untimed run of each; ratio to ours: below 1 is faster than ours):",
        "",
        "| window | seconds | ratio | note |",
        "|---|---|---|---|",
    ]
    for k, v in result["model_space"].items():
        if "skipped" in v:
            extra.append(f"| {k} | - | - | {v['skipped']} |")
        else:
            note = (
                f"label agreement with ours {v['label_agreement']:.4f}"
                if "label_agreement" in v
                else (f"model grid {v['model_shape']}" if "model_shape" in v else "")
            )
            extra.append(f"| {k} | {v['seconds']:.2f} | {v['ratio']:.2f} | {note} |")
    if result["overlap_sweep"]:
        extra += [
            "",
            f"Window overlap vs accuracy (deterministic, no TTA, {len(held)} held-out LA cases):",
            "",
            "| overlap | Dice | s / case |",
            "|---|---|---|",
        ]
        extra += [
            f"| {k.split()[1]} | {v['dice_mean']:.4f} ± {v['dice_std']:.4f} | {v['seconds_per_case']:.2f} |"
            for k, v in result["overlap_sweep"].items()
        ]
    extra += [
        "",
        "What a second MC draw (seed 1) of (c) changes: label agreement; total MI and entropy relative to the first "
        "map; 99.9th percentile of |MI difference| (nats):",
        "",
        "| input | label agreement | MI total ratio | entropy total ratio | |dMI| p99.9 |",
        "|---|---|---|---|---|",
    ]
    for name, v in result.get("mc_noise", {}).items():
        if v:
            extra.append(
                f"| {name} | {v['label_agreement']:.5f} | {v['mi_total_ratio']:.3f} | "
                f"{v['entropy_total_ratio']:.3f} | {v['mi_abs_diff_p999']:.4f} |"
            )
    extra += [
        "",
        "Writing the output set (`reporting.write_output_files`, 5 NRRDs) per gzip level: seconds / MB "
        "(-1: ITK's default; 0: uncompressed):",
        "",
        "| input | " + " | ".join(f"level {lv}" for lv in COMPRESSION_LEVELS) + " |",
        "|---|" + "---|" * len(COMPRESSION_LEVELS),
    ]
    for name, rows in result["paths"].items():
        w = rows.get("segment", {}).get("writing") or {}
        if w:
            cells = [f"{w[str(lv)]['seconds']:.2f} s / {w[str(lv)]['mb']:.1f} MB" for lv in COMPRESSION_LEVELS]
            extra.append(f"| {name} | " + " | ".join(cells) + " |")
    ba = result.get("before_after")
    if ba:
        extra += [
            "",
            f"`segment` end to end with its defaults (N = {mc}, flip TTA), the commit the issue measured "
            f"({ba['before_commit']}) and this one, alternated in this run (seconds of the whole command, best of "
            "2 on the LA case, 1 on the large fields):",
            "",
            "| input | before s | after s | speed-up | Dice before | Dice after |",
            "|---|---|---|---|---|---|",
        ]
        for name, v in ba["inputs"].items():
            dices = [f"{v[k]['dice']:.4f}" if "dice" in v[k] else "-" for k in ("before", "after")]
            extra.append(
                f"| {name} | {v['before']['seconds']:.1f} | {v['after']['seconds']:.1f} | "
                f"{v['ratio_before_to_after']:.2f}x | {dices[0]} | {dices[1]} |"
            )
    st = result.get("startup") or {}
    if st.get("first_line_s") is not None:
        extra += [
            "",
            f"Start-up of `segment` (N = 2, {first}): first progress line after {st['first_line_s']:.2f} s; "
            f"first line after the model loaded (where the first line used to come) {st['first_work_line_s']:.2f} s; "
            f"done after {st['total_s']:.1f} s.",
        ]
    result["cpu_probe_s_end"] = round(speed_probe(), 4)
    extra += [
        "",
        "Machine speed probe (`common.speed_probe`, seconds of a fixed convolution; "
        "compare other runs' seconds through it): "
        f"{result['cpu_probe_s_start']:.4f} at the start, {result['cpu_probe_s_end']:.4f} at the end.",
    ]
    publish(
        args.profile,
        "inference_speed",
        {**flat, "_details": result},
        [
            "input",
            "path",
            "seconds",
            "network s",
            "ratio to (a)",
            "network ratio",
            "peak RSS MB",
            "quality score",
            "Dice",
            f"mL > {FAR_MM:g} mm away (before cleanup)",
            "localization",
        ],
        lambda k, v: (
            None
            if k == "_details"
            else [
                k,
                f"{v['seconds']:.2f}",
                f"{v['network_s']:.2f}",
                f"{v['ratio_to_a']:.2f}",
                f"{v['network_ratio_to_a']:.2f}",
                f"{v['peak_rss_mb']:.0f}",
                _score_cell(v),
                f"{v['dice']:.4f}" if "dice" in v else "-",
                f"{v['far_ml']:.1f} ({v['far_ml_before_cleanup']:.1f})" if "far_ml" in v else "-",
                _localization_cell(v.get("localization")),
            ]
        ),
        extra_lines=extra,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
