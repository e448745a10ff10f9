"""Turn a trained checkpoint into a shipped one: the inference settings chosen after training
(rotation TTA, masks from dropout-off passes) and the quality flag measured by
``benchmarks/uncertainty_quality.py`` are written into its metadata, so ``segment`` applies them.
Weights are copied unchanged (same model id).

    python Training/export_model.py --model runs/x/model.pt --out models/cine_unet2d_selftrained.pt --tta-rot90 \
        [--deterministic-mask] [--quality benchmarks/results/cpu-small/uncertainty_quality_cine.json] [--choice "why"] \
        [--fine-tune-from TEACHER.pt] [--overwrite]

The quality flag is taken from the benchmark's ``suggested_flag`` and only when the benchmark
measured this very model (its model id): a threshold belongs to the weights it was chosen for.
Refuses to overwrite --out unless --overwrite is given (the export of a model onto itself, to add
the flag after the benchmark, is such an overwrite).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from SemiSupCardiacSegLib.checkpoint import (  # noqa: E402  (after the path set-up above)
    load_checkpoint,
    model_payload_from_resume,
    read_model_meta,
    save_checkpoint,
)
from SemiSupCardiacSegLib.errors import InputError  # noqa: E402
from SemiSupCardiacSegLib.model_meta import ModelMeta, QualityRule  # noqa: E402


def export(
    model: Path,
    out: Path,
    tta_rot90: bool = False,
    quality: Path | None = None,
    choice: str | None = None,
    overwrite: bool = False,
    fine_tune_from: Path | None = None,
    deterministic_mask: bool = False,
) -> ModelMeta:
    """Write ``out`` from ``model`` with the given settings; -> the new metadata.

    fine_tune_from: a checkpoint (a self-trained model's teacher) whose method and parameters the
    Slicer module's fine-tuning uses on libraries with unlabeled cases (``jobs.fine_tune_config``)."""
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
    ckpt = model_payload_from_resume(load_checkpoint(model))
    meta = ModelMeta.from_dict(ckpt, Path(model).name)
    if tta_rot90:
        meta = replace(meta, inference=replace(meta.inference, tta_rot90=True))
    if deterministic_mask:
        meta = replace(meta, inference=replace(meta.inference, deterministic_mask=True))
    if quality is not None:
        result = json.loads(Path(quality).read_text())
        measured = result.get("model", {}).get("id")
        if measured != meta.model_id:
            raise InputError(
                f"{Path(quality).name} measured model {measured}, not {meta.model_id}: its threshold "
                "belongs to other weights"
            )
        flag = result["suggested_flag"]
        youden = "youden" in flag
        # the flag-all rule's threshold lies just under a case's score: rounded down, never up past it
        threshold = round(float(flag["threshold"]), 3) if youden else math.floor(float(flag["threshold"]) * 1e3) / 1e3
        how = f"highest Youden index, {flag['youden']:.2f}" if youden else flag["rule"]
        cv = result.get("cross_validation")
        judged = (
            f"; by {cv['folds']}-fold cross-validation the rule flags {cv['n_below_flagged']} of the {cv['n_below']} "
            f"below the cut out of fold, mean out-of-fold Spearman {cv['mean_spearman_test']:.2f}"
            if cv
            else "; set on the same cases it is judged on"
        )
        rule = QualityRule(
            score=flag["score"],
            threshold=threshold,
            min_mc_samples=int(result["model"]["mc_samples"]),
            mc_scope=result["model"].get("mc_scope", "decoder"),
            source=(
                f"{result['command']} on {result['n_cases']} cases ({result['n_samples']} samples): "
                f"{flag['score']} > {threshold:.3f} ({how}) flags {flag['flagged']}, {flag['flagged_below']} "
                f"of the {flag['below']} below the benchmark's Dice cut among them{judged}."
            ),
        )
        meta = replace(meta, quality=rule)
    if choice:
        meta = replace(meta, inference_choice=choice)
    if fine_tune_from is not None:
        teacher = read_model_meta(fine_tune_from)[0]
        meta = replace(
            meta,
            fine_tune={
                "method": teacher.method,
                "method_params": teacher.method_params,
                "from_model_id": teacher.model_id,
            },
        )
    save_checkpoint(out, {**meta.to_dict(), "state_dict": ckpt["state_dict"]})
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="trained checkpoint (model.pt, swa.pt or last.pt)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tta-rot90", action="store_true", help="infer with the 8 in-plane rotations/flips")
    p.add_argument(
        "--deterministic-mask",
        action="store_true",
        help="with MC samples, take the mask and SDM from dropout-off passes (the samples give the uncertainty)",
    )
    p.add_argument("--quality", type=Path, help="uncertainty_quality result JSON of this model: its suggested flag")
    p.add_argument("--choice", help="how the shipped settings were chosen (stored as inference_choice)")
    p.add_argument(
        "--fine-tune-from",
        type=Path,
        help="teacher checkpoint whose (semi-supervised) method fine-tuning on unlabeled cases uses",
    )
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    try:
        meta = export(
            args.model,
            args.out,
            args.tta_rot90,
            args.quality,
            args.choice,
            args.overwrite,
            args.fine_tune_from,
            args.deterministic_mask,
        )
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                "out": str(args.out),
                "model_id": meta.model_id,
                "inference": meta.inference.to_dict(),
                "quality": None if meta.quality is None else meta.quality.threshold,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
