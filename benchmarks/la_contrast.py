"""Why the shipped LA model fails on its worst cases: the atrium's contrast against what surrounds it.

    python benchmarks/la_contrast.py [--model la] [--gammas 0.3,0.45,0.6,1,1.6] [--threads 2] [--smoke]

Per LA2018 training case (train.list, the file's z-scored image at 0.625 mm): the atrium's local
contrast, (mean inside the reference - mean of a shell 2-8 voxels (1.25-5 mm) outside it) / the
shell's standard deviation; positive where the blood pool is brighter than its wall and
neighbours, as LGE-MRI with contrast agent shows it. Then, for the two cases of lowest contrast
and the two of highest, the model's Dice (``evaluate``, one deterministic pass) after a global
gamma map of the image (intensity mapped by its 1-99.5 % range to [0, 1], raised to gamma):
whether a different global intensity curve, what an intensity augmentation would teach the
network, brings the failure back. Where benchmarks/results/<profile>/uncertainty_quality.json holds
per-case Dice of the same model (held-out and unused-label cases), also the Spearman correlation of
contrast with that Dice. The cases' images are read from ../shared and written only as
temporary files. Writes la_contrast.json / .md into benchmarks/results/<profile>/.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import ROOT, benchmark_parser, environment, write_result
from scipy import ndimage

from SemiSupCardiacSegLib.checkpoint import load_model, resolve_model_path
from SemiSupCardiacSegLib.data import find_cases
from SemiSupCardiacSegLib.data.datasets import CaseFile
from SemiSupCardiacSegLib.evaluation import evaluate_cases
from SemiSupCardiacSegLib.io import read_h5_case, write_volume

LA = ROOT.parent / "shared" / "data" / "LA2018"
NAME = "la_contrast"
SHELL_VOXELS = (2, 8)


def local_contrast(image: np.ndarray, label: np.ndarray) -> dict:
    """(inside mean - shell mean) / shell std of the z-scored image; the shell is SHELL_VOXELS outside."""
    z = (image - image.mean()) / max(float(image.std()), 1e-6)
    inside = label > 0
    near, far = (ndimage.binary_dilation(inside, iterations=n) for n in SHELL_VOXELS)
    shell = far & ~near
    mean_in, mean_shell, std_shell = float(z[inside].mean()), float(z[shell].mean()), float(z[shell].std())
    return {"inside": mean_in, "shell": mean_shell, "contrast": (mean_in - mean_shell) / max(std_shell, 1e-6)}


def gamma_dice(net, meta, name: str, gammas: list[float], tmp: Path) -> dict[str, float]:
    """The model's Dice on case ``name`` after each global gamma map of its image."""
    image, label = read_h5_case(LA / "train" / f"{name}.h5", spacing=(0.625, 0.625, 0.625))
    lo, hi = np.percentile(image.array, [1, 99.5])
    x = np.clip((image.array.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    lab_path, img_path = tmp / f"{name}_label.nrrd", tmp / f"{name}.nrrd"
    write_volume(label.with_array(label.array.astype(np.uint8)), lab_path, overwrite=True)
    out = {}
    for g in gammas:
        write_volume(image.with_array((1000.0 * x**g).astype(np.float32)), img_path, overwrite=True)
        ev = evaluate_cases(net, meta, [CaseFile(name, img_path, lab_path)], mc_samples=1, device="cpu")
        out[f"{g:g}"] = float(ev["mean"]["left atrium"]["dice"]["mean"])
    return out


def contrast_vs_dice(per_case: dict, results: Path, model_id: str) -> dict | None:
    """Spearman of contrast with uncertainty_quality.json's per-case Dice, where it is of ``model_id``."""
    from scipy.stats import spearmanr

    path = results / "uncertainty_quality.json"
    if not path.is_file():
        return None
    quality = json.loads(path.read_text())
    if quality.get("model", {}).get("id") != model_id:
        return None
    names = [n for n in quality["per_case"] if n in per_case]
    if len(names) < 3:
        return None
    rho, p = spearmanr([per_case[n]["contrast"] for n in names], [quality["per_case"][n]["dice"] for n in names])
    return {"n": len(names), "spearman": float(rho), "p": float(p)}


def main(argv=None) -> int:
    p = benchmark_parser(__doc__, "three cases, one gamma; writes nothing")
    p.add_argument("--model", default="la")
    p.add_argument("--gammas", default="0.3,0.45,0.6,1,1.6")
    args = p.parse_args(argv)
    if not (LA / "train.list").is_file():
        print(f"the LA2018 data is not at {LA} (kept outside the repository); nothing to measure")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    net, meta = load_model(resolve_model_path(args.model))
    names = [c.name for c in find_cases(LA / "train.list")]
    gammas = [float(g) for g in args.gammas.split(",")]
    if args.smoke:
        names, gammas = names[:3], [1.0]
    per_case = {}
    for n in names:
        image, label = read_h5_case(LA / "train" / f"{n}.h5", spacing=(0.625, 0.625, 0.625))
        per_case[n] = local_contrast(image.array.astype(np.float32), label.array)
    ranked = sorted(per_case, key=lambda n: per_case[n]["contrast"])
    probed = ranked[:2] + ranked[-2:] if not args.smoke else ranked[:1]
    with tempfile.TemporaryDirectory() as tmp:
        for n in probed:
            per_case[n]["dice_after_gamma"] = gamma_dice(net, meta, n, gammas, Path(tmp))
            print(n, per_case[n], flush=True)
    td = meta.training_data
    role = {n: "labeled" for n in td.get("labeled_cases", [])}
    role.update({n: "pseudo-labeled" for n in td.get("pseudo_labeled_cases", [])})
    role.update({n: "held-out" for n in td.get("validation_cases", [])})
    contrasts = np.array([per_case[n]["contrast"] for n in names])
    vs_dice = contrast_vs_dice(per_case, ROOT / "benchmarks" / "results" / args.profile, meta.model_id)
    lines = [
        f"Local contrast of the atrium, {len(names)} LA2018 training cases: median {np.median(contrasts):.2f}, "
        f"{int((contrasts < 0).sum())} below 0 (blood pool darker than a 1.25-5 mm shell around it); "
        f"model {meta.model_id}."
        + (
            f" Spearman of contrast with the model's Dice on the {vs_dice['n']} cases of uncertainty_quality "
            f"(labels no stage read): {vs_dice['spearman']:.2f} (p = {vs_dice['p']:.1g})."
            if vs_dice
            else ""
        ),
        "",
        "| case | role for the model | contrast | Dice after gamma " + " / ".join(f"{g:g}" for g in gammas) + " |",
        "|---|---|---|---|",
    ]
    for n in dict.fromkeys(ranked[:6] + ranked[-2:]):
        d = per_case[n].get("dice_after_gamma")
        cells = " / ".join(f"{d[f'{g:g}']:.3f}" for g in gammas) if d else "-"
        lines.append(f"| {n} | {role.get(n, 'unlabeled')} | {per_case[n]['contrast']:.2f} | {cells} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.smoke:
        return 0
    result = {
        "benchmark": NAME,
        "command": "python " + " ".join(sys.argv),
        "environment": environment(),
        "model_id": meta.model_id,
        "shell_voxels": list(SHELL_VOXELS),
        "gammas": gammas,
        "contrast_vs_dice": vs_dice,
        "cases": {n: {**per_case[n], "role": role.get(n, "unlabeled")} for n in names},
    }
    write_result(args.profile, NAME, result, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
