"""Write a model card (Markdown) from a training run and an `evaluate` result, so cards are generated,
not typed: every figure in them comes from files the run and the evaluation wrote.

    python Training/model_card.py --run runs/la_sassnet_cpu --model models/la_vnet_selftrained.pt \
        --eval runs/la_sassnet_cpu/eval_val.json --hardware "2-core CPU, no GPU" \
        --command "python Training/train.py --config ... --out ..." --out models/la_vnet_selftrained.md

Refuses to overwrite --out unless --overwrite is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from SemiSupCardiacSegLib.atomic import atomic_write_text  # noqa: E402 (after the sys.path entry above)


def _fmt(summary: dict, key: str, digits: int = 3) -> str:
    s = summary.get(key)
    if not s or s["n"] == 0:
        return "n/a"
    extra = f" ({s['n_nan']} undefined)" if s.get("n_nan") else ""
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}{extra}"


def evaluation_lines(evaluation: dict) -> list[str]:
    """The card's "Held-out evaluation" section (heading, summary table, per-case table) from an
    ``evaluate`` result."""
    lines: list[str] = []
    unit = evaluation.get("distance_unit", "mm")
    unit_note = (
        "distances in voxels: the cine .h5 files store no spacing (SSL4MIS's ACDC convention)"
        if unit == "voxel"
        else "distances in mm"
    )
    lines += [
        "",
        "## Held-out evaluation (input grid, full resolution)",
        "",
        f"`python -m SemiSupCardiacSegLib evaluate` on the {evaluation['n_cases']} held-out cases, "
        f"MC samples {evaluation['mc_samples']}, "
        + (
            "TTA over the 8 in-plane rotations and flips"
            if evaluation.get("tta_rot90")
            else f"flip TTA axes {evaluation.get('tta_flip_axes', [])}"
        )
        + (
            " (masks and SDM from the dropout-off passes, uncertainty from the MC samples)"
            if evaluation.get("deterministic_mask")
            else ""
        )
        + "; "
        f"mean ± std over cases; {unit_note}.",
        "",
        f"| structure | Dice | Jaccard | HD95 {unit} | ASD {unit} | RAVD | precision | recall | Brier |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, summary in evaluation["mean"].items():
        lines.append(
            f"| {name} | {_fmt(summary, 'dice')} | {_fmt(summary, 'jaccard')} | {_fmt(summary, 'hd95', 2)} | "
            f"{_fmt(summary, 'asd', 2)} | {_fmt(summary, 'ravd')} | {_fmt(summary, 'precision')} | "
            f"{_fmt(summary, 'recall')} | "
            f"{_fmt(summary, 'brier', 4)} |"
        )
    names = list(evaluation["mean"])
    lines += [
        "",
        "Per case (Dice per structure):",
        "",
        "| case | " + " | ".join(names) + " | seconds |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for case, res in evaluation["per_case"].items():
        lines.append(f"| {case} | " + " | ".join(f"{res[n]['dice']:.4f}" for n in names) + f" | {res['seconds']:.1f} |")
    return lines


def card(run: Path, model: Path, evaluation: dict, hardware: str, title: str, command: str) -> str:
    from SemiSupCardiacSegLib.checkpoint import load_model  # deferred: loads torch (start-up, --help)

    _, meta = load_model(model)
    config = json.loads((run / "config.json").read_text())
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    steps = [r for r in log if "step_s" in r]
    vals = [r for r in log if "val_dice" in r]
    td = meta.training_data
    lines = [
        f"# {title}",
        "",
        f"- file: `{model.name}` ({model.stat().st_size / 1e6:.1f} MB, "
        f"weights {config.get('export_dtype', 'float32')}), "
        f"model id `{meta.model_id}`, created {meta.created}",
        f"- method: `{meta.method}`; architecture `{meta.arch}` {json.dumps(meta.network)}",
        f"- method parameters: `{json.dumps(meta.method_params)}`",
        f"- preprocessing: `{json.dumps(meta.preprocessing.to_dict())}`; patch {list(meta.patch_size)} voxels",
        f"- labels: {json.dumps(meta.label_names())}",
        "",
        "## Training protocol",
        "",
        f"- data: `{td.get('source')}`; {td['n_labeled']} labeled, "
        + (
            f"{td['n_pseudo_labeled']} pseudo-labeled (a teacher's segmentations, `pseudo_labels.py`), "
            if td.get("n_pseudo_labeled")
            else ""
        )
        + f"{td['n_unlabeled']} unlabeled, {td['n_validation']} held out for validation (never trained on)",
        f"- labeled cases: {', '.join(td['labeled_cases'])}",
    ]
    if td.get("pseudo_labeled_cases"):
        lines.append(
            f"- pseudo-labeled cases (images of unlabeled cases, labels from the teacher): "
            f"{', '.join(td['pseudo_labeled_cases'])}"
        )
    lines += [
        f"- held-out cases: {', '.join(td['validation_cases'])}",
        f"- iterations: {meta.iteration} (batch {config['batch_size']}, "
        f"{config['labeled_per_batch']} labeled per batch); "
        f"optimizers `{json.dumps(config['optim'])}`; seed {config['seed']}",
        (
            f"- hardware: {hardware}; mean step time {steps[-1]['step_s']:.2f} s/iteration "
            f"(data {steps[-1]['data_s']:.3f} s)"
        )
        if steps
        else f"- hardware: {hardware}",
        f"- command: `{command}`",
    ]
    swa = meta.swa
    if swa:  # stochastic weight averaging (the training config's ``swa``)
        its = [swa["start"] + swa["every"] * (i + 1) for i in range(swa["n_averaged"])]
        shown = ", ".join(map(str, its)) if len(its) <= 3 else f"{its[0]}, {its[1]}, ..., {its[-1]}"
        lines.append(
            f"- the shipped weights are the mean of the weights after iterations {shown} "
            f"({swa['n_averaged']} snapshots, stochastic weight averaging), "
            f"BatchNorm statistics recomputed on {swa['bn_batches']} training batches; no checkpoint was picked on the "
            "held-out cases, so the figures below are not selection-biased"
        )
    else:
        lines.append(
            "- the shipped weights are those of the last iteration (no checkpoint was picked on the held-out cases, so "
            "the figures below are not selection-biased)"
        )
    lines += [
        "",
        "Validation Dice during training (model space, sliding window, no MC):",
        "",
        "| iteration | Dice |",
        "|---|---|",
    ]
    lines += [f"| {r['iteration']} | {r['val_dice']:.4f} |" for r in vals]
    lines += [
        f"| {r['iteration']}, weight average of {r['swa_n_averaged']} | {r['swa_val_dice']:.4f} |"
        for r in log
        if "swa_val_dice" in r
    ]
    lines += evaluation_lines(evaluation)
    if "left atrium" in meta.labels.values():
        cite = (
            "2018 Atrial Segmentation Challenge LGE-MRI, preprocessed (z-scored, 0.625 mm isotropic). Xiong Z. et al., "
            '"A global benchmark of algorithms for segmenting the left atrium from late gadolinium-enhanced cardiac '
            'magnetic resonance imaging", Medical Image Analysis 67, 2021.'
        )
    else:
        cite = (
            'ACDC 2017 cine MRI (SSL4MIS h5 layout: slices min-max scaled, no spacing). Bernard O. et al., "Deep '
            "learning techniques for automatic MRI cardiac multi-structures segmentation and diagnosis: is the "
            'problem solved?", IEEE TMI 37(11), 2018.'
        )
    lines += ["", "## Data and citation", "", cite + " The data are not part of this repository.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="training run folder (config.json, log.jsonl)")
    p.add_argument("--model", type=Path, required=True, help="the checkpoint the card describes")
    p.add_argument("--eval", type=Path, required=True, help="JSON written by `SemiSupCardiacSegLib evaluate`")
    p.add_argument("--hardware", required=True)
    p.add_argument("--title", default="Model card")
    p.add_argument("--command", required=True, help="the training command line, as run")
    p.add_argument("--notes", type=Path, default=None, help="Markdown file appended as a 'Notes' section")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)

    if args.out.exists() and not args.overwrite:
        print(f"error: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    text = card(args.run, args.model, json.loads(args.eval.read_text()), args.hardware, args.title, args.command)
    if args.notes is not None:
        text += "\n## Notes\n\n" + args.notes.read_text().strip() + "\n"
    atomic_write_text(args.out, text)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
