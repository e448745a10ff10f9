"""The README's main job: segment a built-in default input with the shipped LA model.

Default input: a held-out real LA case (one of the shipped model's validation cases, never seen in
training) when ../shared/data/LA2018 is beside the repository, else a synthetic LGE-MRI-like
left-atrium phantom from :mod:`phantoms`, so it runs on a fresh clone. Writes into ``--out``:
``input.nrrd`` (and ``reference_label.nrrd``), the ``segment`` outputs (segmentation, probability,
distance, uncertainty, mutual information, report.json), ``montage.png`` and, with slicer-core
installed, ``slicer_scene/scene.mrml`` (opens in 3D Slicer with the uncertainty overlay).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .atomic import atomic_write_text
from .cli import main as cli_main
from .io import read_h5_case, read_label, read_volume, write_volume
from .metrics import dice
from .phantoms import make_la_phantom
from .volume import Volume

REPO = Path(__file__).resolve().parent.parent
LA_DIR = REPO.parent / "shared" / "data" / "LA2018"


def default_input(out: Path, model: str | None, source: str) -> tuple[Path, Path | None, str]:
    """Write the default input (and its reference label) into ``out``; -> (image, label, description)."""
    from .checkpoint import load_model  # deferred: loads torch (start-up, --help)

    if source in ("auto", "real") and (LA_DIR / "train").is_dir():
        _, meta = load_model(model)
        val = meta.training_data.get("validation_cases") or []
        h5 = next((LA_DIR / "train" / f"{n}.h5" for n in val if (LA_DIR / "train" / f"{n}.h5").is_file()), None)
        if h5 is not None:
            image, label = read_h5_case(h5)
            write_volume(image, out / "input.nrrd", overwrite=True)
            write_volume(label, out / "reference_label.nrrd", overwrite=True)
            return out / "input.nrrd", out / "reference_label.nrrd", f"real LA case {h5.stem} (held out of training)"
    if source == "real":
        raise SystemExit(f"error: real LA data not found at {LA_DIR}")

    ph = make_la_phantom(seed=7)
    write_volume(Volume(ph.image, ph.spacing), out / "input.nrrd", overwrite=True)
    write_volume(Volume(ph.label, ph.spacing), out / "reference_label.nrrd", overwrite=True)
    return out / "input.nrrd", out / "reference_label.nrrd", "synthetic LGE-MRI left-atrium phantom (seed 7)"


def write_slicer_scene(out: Path, image: Path) -> Path | None:
    """Slicer scene of the demo (input, segmentation, SDM, uncertainty overlay) in ``out/slicer_scene``.

    Uses the module's Qt-free Logic on a slicer-core scene; returns None (with a message) when
    slicer-core is not installed. The folder is the demo's own and is rewritten on every run.
    """
    try:
        import slicer  # noqa: F401  (slicer-core)
    except ImportError:
        print("slicer-core not installed: no Slicer scene written (pip install slicer-core)")
        return None

    module_dir = str(REPO / "SemiSupCardiacSeg")
    if module_dir not in sys.path:
        sys.path.insert(0, module_dir)
    from SemiSupCardiacSegSceneLogic import headless_slicer  # optional: needs slicer-core

    logic = headless_slicer().logic()
    node = logic.add_volume_node(read_volume(image), "input")
    result = logic.import_outputs(node, out)
    logic.show_overlays(node, result)
    folder = out / "slicer_scene"
    if folder.is_dir():
        shutil.rmtree(folder)
    nodes = [n for n in (node, result.segmentation, result.distance, result.uncertainty) if n is not None]
    return logic.save_scene(folder, nodes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="demo_output", type=Path)
    p.add_argument("--model", default=None, help="shipped name or checkpoint (default: la)")
    p.add_argument("--source", choices=["auto", "real", "phantom"], default="auto")
    p.add_argument("--mc-samples", type=int, default=10)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    image, label, what = default_input(args.out, args.model, args.source)
    print(f"demo input: {what} -> {image}")
    cmd = [
        "segment",
        str(image),
        "--out",
        str(args.out),
        "--mc-samples",
        str(args.mc_samples),
        "--device",
        args.device,
        "--montage",
        "--overwrite",
    ] + (["--model", args.model] if args.model else [])
    code = cli_main(cmd)
    if code:
        return code
    if label is not None:
        seg = read_label(args.out / "segmentation.nrrd").array
        ref = read_label(label).array
        d = dice(seg > 0, ref > 0)
        report = json.loads((args.out / "report.json").read_text())
        report["demo"] = {"input": what, "dice_vs_reference": d}
        atomic_write_text(args.out / "report.json", json.dumps(report, indent=2))
        print(f"Dice vs reference label: {d:.4f}")
    scene = write_slicer_scene(args.out, image)
    print(
        f"outputs in {args.out}/: segmentation.nrrd probability.nrrd distance.nrrd uncertainty.nrrd "
        f"mutual_information.nrrd report.json montage.png"
    )
    if scene is not None:
        print(f"Slicer scene (open in 3D Slicer): {scene}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
