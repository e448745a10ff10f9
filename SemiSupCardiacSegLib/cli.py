"""Command line: ``python -m SemiSupCardiacSegLib segment|evaluate|pseudo-label|suggest|indices ...``.

Bad input ends with one line ``error: ...`` on stderr and exit code 2; nothing is overwritten
unless ``--overwrite`` is given. Any failure does: a bad option, a parameter out of range (checked
by ``check_args`` before any file is read), an unreadable file, a full or read-only disk (the path
and "no space left on device" / "read-only file system", ``errors.describe_os_error``), or a bug
(its exception class and message); ``--debug`` (anywhere on the line) adds the traceback.
An assumption or an implausible result (``errors.InputWarning``) is one ``warning: ...`` line on
stderr and is also written into the output JSON (``assumptions`` / ``warnings``).
"""

from __future__ import annotations

import argparse
import csv
import errno
import io
import json
import math
import os
import re
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .atomic import atomic_folder, atomic_write_text
from .cardiac import ACDC_LABELS, cardiac_indices
from .dependencies import import_optional
from .errors import InputError, InputWarning, describe_os_error, warn
from .io import check_label_values, file_sha256, read_label, read_volume, reading_overrides
from .jsonout import dumps as json_dumps
from .montage import save_montage
from .progress import progress_bar
from .shipped import SHIPPED
from .volume import mask_box

if TYPE_CHECKING:  # torch-free at import: the model metadata type only for annotations
    from .model_meta import ModelMeta

#: The most MC-dropout samples accepted (the shipped models' quality flags use 10; hundreds only
#: cost time).
MAX_MC_SAMPLES = 1000


class _Parser(argparse.ArgumentParser):
    """One ``error: ...`` line (no usage block) and exit code 2 for a bad option."""

    def error(self, message: str):
        print(f"error: {message} (see --help)", file=sys.stderr, flush=True)
        raise SystemExit(2)


def _in_range(name: str, value, lo=None, hi=None, lo_open=False, hi_open=False) -> None:
    if value is None:
        return
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    ok = (
        ok
        and (lo is None or (value > lo if lo_open else value >= lo))
        and (hi is None or (value < hi if hi_open else value <= hi))
    )
    if not ok:
        lo_s = "" if lo is None else ("(" if lo_open else "[") + f"{lo:g}, "
        hi_s = "inf)" if hi is None else f"{hi:g}" + (")" if hi_open else "]")
        raise InputError(f"{name} must be in {lo_s}{hi_s}, got {value}")


def check_args(args: argparse.Namespace) -> None:
    """Every parameter range-checked before any work (files exist, numbers in range, the output
    writable); the model-dependent checks (patch size, MC scope) follow when the model is loaded."""
    _in_range("--mc-samples", getattr(args, "mc_samples", None), 1, MAX_MC_SAMPLES)
    if getattr(args, "mc_samples", None) is not None and not isinstance(args.mc_samples, int):
        raise InputError(f"--mc-samples must be an integer, got {args.mc_samples}")
    _in_range("--overlap", getattr(args, "overlap", None), 0.0, 1.0, hi_open=True)
    _in_range("--threads", getattr(args, "threads", None), 1, 4096)
    _in_range("--keep-fraction", getattr(args, "keep_fraction", None), 0.0, 1.0, lo_open=True)
    spacing = getattr(args, "spacing", None)
    if spacing is not None:
        if len(spacing) != 3 or not all(math.isfinite(v) and v > 0 for v in spacing):
            raise InputError(f"--spacing must be three numbers > 0 (mm), got {' '.join(f'{v:g}' for v in spacing)}")
    device = getattr(args, "device", None)
    if device is not None and not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", str(device)):
        raise InputError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    for attr, what in (
        ("input", "input"),
        ("ed", "--ed"),
        ("es", "--es"),
        ("roi_mask", "--roi-mask"),
        ("patient", "--patient"),
    ):
        value = getattr(args, attr, None)
        if isinstance(value, str) and value and not Path(value).exists():
            raise InputError(f"{what} file not found: {value}")
    model = getattr(args, "model", None)
    if model is not None:
        if str(model) not in SHIPPED and not Path(model).is_file():
            raise InputError(f"--model {model}: neither a shipped model ({', '.join(sorted(SHIPPED))}) nor a file")
    for src in getattr(args, "data", None) or []:
        if not Path(src).exists():
            raise InputError(f"--data {src}: no such folder, list or file")
    out = getattr(args, "out", None)
    if out is not None:
        _check_out(Path(out), is_file=args.command in ("evaluate", "indices", "adapt"))


def _check_out(out: Path, is_file: bool) -> None:
    """The output path can be written: not a file where a folder is wanted (or the reverse), and its
    nearest existing folder is writable (read-only file systems named as such)."""

    if is_file and out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name (e.g. {out / 'result.json'})")
    if not is_file and out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder")
    base = out.parent if is_file else out
    while not base.exists() and base != base.parent:
        base = base.parent
    if base.is_dir() and not os.access(base, os.W_OK):
        try:
            read_only = bool(os.statvfs(base).f_flag & os.ST_RDONLY)
        except (OSError, AttributeError):
            read_only = False
        if read_only:
            raise OSError(errno.EROFS, "read-only file system", str(base))
        raise OSError(errno.EACCES, "permission denied (not writable)", str(base))


def _progress_bar(desc: str, enabled: bool):

    bar = progress_bar(total=100, desc=desc, disable=not enabled, leave=False, bar_format="{l_bar}{bar}| {elapsed}")

    def update(frac: float) -> None:
        bar.n = int(round(100 * frac))
        bar.refresh()

    return bar, update


def is_batch_input(path: str) -> bool:
    """``segment`` INPUT is a batch: a folder or a ``.list`` file of cases."""
    return Path(path).is_dir() or Path(path).suffix == ".list"


def cmd_segment(args: argparse.Namespace) -> int:
    from .atomic import is_complete_set

    if args.montage:  # fail before the work, not after it
        import_optional("matplotlib", "--montage")
    if is_batch_input(args.input):
        return cmd_segment_batch(args)
    out = Path(args.out)
    if not args.overwrite and is_complete_set(out):
        raise InputError(f"{out} already holds segmentation outputs; choose another --out or pass --overwrite")
    inputs = _read_inputs(args.input, args.es, args.roi_mask)  # bad input is refused before the model loads
    # The progress shows before torch and the model load (seconds on a laptop), not after.
    if args.progress_lines:  # for a parent process (the Slicer module) that polls our stdout
        bar = None

        def update(frac: float) -> None:
            print(f"PROGRESS {frac:.4f}", flush=True)

        update(0.0)
    else:
        bar, update = _progress_bar("segment", not args.quiet)
    try:
        from .checkpoint import load_model  # deferred: loads torch (start-up, --help)

        model, meta = load_model(args.model)
        _set_threads(args)
        report, seconds = segment_case(model, meta, args, inputs, out, update)
    finally:
        if bar is not None:
            bar.close()
    summary = {name: round(s["volume_ml"], 2) for name, s in report["structures"].items()}
    print(json.dumps({"out": str(out), "volumes_ml": summary, "seconds": round(seconds, 2)}))
    return 0


def _set_threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch  # deferred: loads torch (start-up, --help)

        torch.set_num_threads(args.threads)


def _read_inputs(path, es_path=None, roi_path=None) -> dict:
    """The volumes of one ``segment`` case: {"input", "volume", "es", "es_volume", "roi_mask", "box", "inside"}."""

    volume = read_volume(path)
    box, inside = _roi_from_mask(roi_path, volume) if roi_path else (None, None)
    es_volume = None
    if es_path:
        es_volume = read_volume(es_path)
        if not es_volume.same_grid(volume):
            raise InputError(
                f"{es_path}: the end-systolic frame is not on the grid of {path} (shape, spacing, "
                "origin and direction must match)"
            )
    return {
        "input": path,
        "volume": volume,
        "es": es_path,
        "es_volume": es_volume,
        "roi_mask": roi_path,
        "box": box,
        "inside": inside,
    }


def segment_case(
    model, meta: ModelMeta, args: argparse.Namespace, inputs: dict, out: Path, update, input_sha256: str | None = None
) -> tuple[dict, float]:
    """Segment one case (``_read_inputs``) and write its whole output set into ``out``, all or nothing
    (``atomic.atomic_folder``: the NRRDs, report.json, montage.png and es/ go into a folder beside
    ``out``, then into place). report.json records the input file's sha256 (``input_sha256``; computed
    here unless given), which tells a later batch run whether the set is still this input's.
    Returns (report, seconds of inference)."""
    from .inference import Predictor  # deferred: loads torch (start-up, --help)
    from .reporting import (  # deferred: loads torch (start-up, --help)
        SEGMENT_SET,
        segmentation_report,
        write_output_files,
    )

    volume, es_volume, box, inside = inputs["volume"], inputs["es_volume"], inputs["box"], inputs["inside"]
    settings = _settings_of(meta, args)
    predictor = Predictor(model, meta, settings)

    def predict(vol, progress):
        pred = predictor.predict(vol.crop(box) if box else vol, progress)
        return pred.uncrop(vol, box, inside[box]) if box else pred

    share = 0.5 if es_volume is not None else 1.0
    pred = predict(volume, lambda f: update(share * f))
    es_pred = predict(es_volume, lambda f: update(0.5 + 0.5 * f)) if es_volume is not None else None
    report = segmentation_report(pred, meta)
    report["input"] = str(inputs["input"])
    report["input_sha256"] = input_sha256 or file_sha256(inputs["input"])
    if box is not None:
        report["roi_mask"] = {
            "file": str(inputs["roi_mask"]),
            "voxels": int(inside.sum()),
            "box_ijk": [[b.start, b.stop] for b in box],
        }
    es_report = None
    if es_pred is not None:
        es_report = segmentation_report(es_pred, meta)
        es_report["input"] = str(inputs["es"])
        if set(meta.labels.values()) >= {"right ventricle", "myocardium", "left ventricle"}:
            report["cardiac_indices"] = cardiac_indices(pred.labels.array, es_pred.labels.array, volume.spacing)
    seconds = pred.timings.total_s + (es_pred.timings.total_s if es_pred is not None else 0.0)
    with atomic_folder(out, overwrite=args.overwrite, owned=SEGMENT_SET.__contains__) as tmp:
        if es_pred is not None:
            write_output_files(es_pred, es_report, tmp / "es", compact=args.compact)
        if args.montage:
            save_montage(
                volume.array,
                pred.labels.array,
                pred.entropy.array,
                tmp / "montage.png",
                title=f"{Path(inputs['input']).name} - model {meta.model_id}",
            )
        write_output_files(pred, report, tmp, compact=args.compact)
    return report, seconds


#: Files of a batch's output folder besides the per-case folders.
SUMMARY_CSV, SUMMARY_JSON = "summary.csv", "summary.json"
#: Errors that stop a whole batch (every later case would fail the same way): the disk, not the case.
_BATCH_FATAL_ERRNOS = ("ENOSPC", "EDQUOT", "EROFS")


def cmd_segment_batch(args: argparse.Namespace) -> int:
    """``segment FOLDER|LIST --out OUT``: every case into OUT/<case>/ (all or nothing per case), the
    model loaded once. A failing case is reported in one line and skipped; a case whose folder holds
    a complete set (report.json) made by this model, with these settings, from this very input file
    (its sha256) is skipped unless --overwrite (a rerun after a crash or Ctrl-C only does what is
    left); a set made otherwise is not replaced without --overwrite (the case fails, saying why).
    OUT/summary.csv and OUT/summary.json (one row per case: volumes, quality flag, seconds, error)
    are rewritten atomically after each case. Exit code 0: every case segmented; 1: some failed
    (named in the summary); 2: the batch itself could not run (bad list, unwritable OUT, disk full:
    cases done so far are kept); 130: interrupted."""

    from .checkpoint import load_model  # deferred: loads torch (start-up, --help)
    from .data import find_cases  # deferred: loads torch (start-up, --help)

    if args.es or args.roi_mask:
        raise InputError("--es and --roi-mask name files of one case; they cannot be used with a folder or .list input")
    cases = find_cases(args.input)
    _check_unique_names(cases, args.input)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, meta = load_model(args.model)
    _set_threads(args)
    try:
        rows = segment_cases(model, meta, args, cases, out, replace_stale=args.overwrite)
    except KeyboardInterrupt:
        return 130
    failed = sum(r["status"] == "failed" for r in rows.values())
    done = len(rows) - failed
    result = {"out": str(out), "cases": len(cases), "complete": done, "failed": failed}
    print(json.dumps({**result, "summary": str(out / SUMMARY_CSV)}))
    return 1 if failed else 0


def _check_unique_names(cases, source) -> None:
    seen: dict[str, str] = {}
    for c in cases:
        if c.name in seen:
            raise InputError(
                f"{source}: two cases are named '{c.name}' ({seen[c.name]}, {c.image}); "
                "each case needs its own output folder"
            )
        seen[c.name] = str(c.image)


def _settings_of(meta: ModelMeta, args: argparse.Namespace):
    from .inference import InferenceSettings  # deferred: loads torch (start-up, --help)

    return InferenceSettings.from_meta(
        meta,
        tta=not args.no_tta,
        mc_samples=args.mc_samples,
        mc_scope=args.mc_scope,
        overlap=args.overlap,
        device=args.device,
        allow_large=args.allow_large,
        localize=not args.no_localize,
    )


def earlier_set(case_out: Path, meta: ModelMeta, settings_report: dict, sha256: str) -> tuple[dict | None, str | None]:
    """(report, None) when ``case_out`` holds a complete set made by this model (id), with these
    inference settings (MC samples, TTA, MC scope), from this input (sha256); (None, why not) when it
    holds another one; (None, None) when it holds none."""
    from .reporting import is_complete_set  # deferred: loads torch (start-up, --help)

    if not is_complete_set(case_out):
        return None, None
    report = _read_report(case_out)
    if report is None:
        return None, "its report.json cannot be read"
    made_by = (report.get("model") or {}).get("id")
    if made_by != meta.model_id:
        return None, f"it holds outputs of another model (id {made_by}, not {meta.model_id})"
    timings = report.get("timings_s") or {}
    changed = sorted(k for k, v in settings_report.items() if timings.get(k) != v)
    if changed:
        return None, f"it holds outputs made with other settings ({', '.join(changed)})"
    if report.get("input_sha256") != sha256:
        return None, "it holds outputs of another input file (or of one whose sha256 was not recorded)"
    return report, None


def segment_cases(
    model, meta: ModelMeta, args: argparse.Namespace, cases: list, out: Path, replace_stale: bool
) -> dict[str, dict]:
    """Segment ``cases`` into OUT/<case>/, reusing the sets made earlier by this model, settings and
    input (``earlier_set``); replace_stale: recompute a set made otherwise (else that case fails,
    saying why). Writes OUT/summary.csv/.json after each case. Returns {case: summary row (with its
    "report")}; KeyboardInterrupt is re-raised after one line saying what is complete."""
    settings_report = _settings_of(meta, args).report()
    structures = list(meta.labels.values())
    rows: dict[str, dict] = {}
    n = len(cases)
    bar = progress_bar(total=n, desc="segment", disable=args.quiet or args.progress_lines, unit="case")
    try:
        for i, case in enumerate(cases):
            case_out = out / case.name
            t0 = time.perf_counter()
            try:
                sha = file_sha256(case.image)
                report, stale = (None, None) if args.overwrite else earlier_set(case_out, meta, settings_report, sha)
                if report is not None:
                    rows[case.name] = _summary_row(case, case_out, report, None, None, "done earlier")
                elif stale and not replace_stale:
                    raise InputError(f"{case_out}: not replaced: {stale}; pass --overwrite to recompute it")
                else:

                    def update(frac: float, i=i) -> None:
                        if args.progress_lines:
                            print(f"PROGRESS {(i + frac) / n:.4f}", flush=True)

                    inputs = _read_inputs(case.image)
                    case_args = argparse.Namespace(**{**vars(args), "overwrite": args.overwrite or bool(stale)})
                    report, _ = segment_case(model, meta, case_args, inputs, case_out, update, input_sha256=sha)
                    rows[case.name] = _summary_row(case, case_out, report, time.perf_counter() - t0, None, "done")
            except (InputError, OSError, RuntimeError, ValueError, MemoryError) as exc:
                if isinstance(exc, OSError) and errno.errorcode.get(exc.errno or -1) in _BATCH_FATAL_ERRNOS:
                    raise
                message = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
                rows[case.name] = _summary_row(case, case_out, None, time.perf_counter() - t0, message, "failed")
                bar.write(f"error: {case.name}: {message}", file=sys.stderr)
            _write_summary(out, rows, structures, meta)
            bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        done = sum(r["status"] != "failed" for r in rows.values())
        print(
            f"interrupted: {done} of {n} cases complete in {out}; run the same command again to do the rest",
            file=sys.stderr,
            flush=True,
        )
        raise
    bar.close()
    return rows


def _read_report(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return None


def _summary_row(
    case, case_out: Path, report: dict | None, seconds: float | None, error: str | None, status: str
) -> dict:
    """One case of the batch summary: volumes (mL) and quality flags per structure from its report."""
    structures = (report or {}).get("structures", {})
    if seconds is None and report is not None:  # a case done by an earlier run: its own inference time
        seconds = (report.get("timings_s") or {}).get("total_s")
    flags = [s.get("doubtful") for s in structures.values()]
    quality = (
        None
        if not structures
        else (
            "doubtful" if any(f is True for f in flags) else "not assessed" if any(f is None for f in flags) else "ok"
        )
    )
    return {
        "case": case.name,
        "input": str(case.image),
        "out": str(case_out),
        "status": status,
        "volumes_ml": {n: round(float(s["volume_ml"]), 3) for n, s in structures.items()},
        "doubtful": {n: s.get("doubtful") for n, s in structures.items()},
        "quality": quality,
        "seconds": None if seconds is None else round(float(seconds), 2),
        "error": error,
        "report": report,
    }


def _write_summary(out: Path, rows: dict, structures: list, meta: ModelMeta) -> None:
    """OUT/summary.json and OUT/summary.csv, each written atomically."""

    ordered = [{k: v for k, v in rows[name].items() if k != "report"} for name in rows]
    payload = {
        "model": {"id": meta.model_id, "path": meta.path},
        "n_cases": len(ordered),
        "n_complete": sum(r["status"] != "failed" for r in ordered),
        "n_failed": sum(r["status"] == "failed" for r in ordered),
        "cases": ordered,
    }
    atomic_write_text(out / SUMMARY_JSON, json.dumps(payload, indent=2))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case", "status", *[f"{s} (mL)" for s in structures], "quality", "seconds", "error", "input"])
    for r in ordered:
        vols = ["" if r["volumes_ml"].get(s) is None else f"{r['volumes_ml'][s]:.2f}" for s in structures]
        writer.writerow(
            [
                r["case"],
                r["status"],
                *vols,
                r["quality"] or "",
                "" if r["seconds"] is None else r["seconds"],
                r["error"] or "",
                r["input"],
            ]
        )
    atomic_write_text(out / SUMMARY_CSV, buf.getvalue())


def _roi_from_mask(path, volume) -> tuple[tuple[slice, slice, slice], object]:
    """``--roi-mask``: a label file on the input's grid whose nonzero voxels are to be segmented ->
    (the index box around them, the bool mask); refused when off-grid or empty."""

    mask = read_label(path)
    if not mask.same_grid(volume):
        raise InputError(
            f"{path}: the ROI mask is not on the input's grid (shape, spacing, origin and direction must match)"
        )
    inside = mask.array > 0
    if not inside.any():
        raise InputError(f"{path}: the ROI mask is empty (no nonzero voxel)")
    box = mask_box(inside)
    sub = volume.array[box]
    size = " x ".join(str(b.stop - b.start) for b in box)
    if sub.size < 8 or float(np.nanmax(sub)) == float(np.nanmin(sub)):
        raise InputError(
            f"{path}: the ROI mask's box ({size} voxels, {int(inside.sum())} in the mask) is too small "
            "to segment: the image is constant there; draw a larger ROI around the structure"
        )
    return box, inside


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoint import load_model  # deferred: loads torch (start-up, --help)
    from .data import find_cases  # deferred: loads torch (start-up, --help)
    from .evaluation import evaluate_cases  # deferred: loads torch (start-up, --help)

    model, meta = load_model(args.model)
    cases = [c for src in args.data for c in find_cases(src) if c.label is not None]
    if not cases:
        raise InputError("no labeled cases found in --data")
    with progress_bar(total=len(cases), desc="evaluate", disable=args.quiet) as bar:
        result = evaluate_cases(
            model,
            meta,
            cases,
            mc_samples=args.mc_samples,
            tta=not args.no_tta,
            overlap=args.overlap,
            device=args.device,
            progress=lambda f: bar.update(round(f * len(cases)) - bar.n),
        )
    result = {"model": {"id": meta.model_id, "path": meta.path}, **result}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json_dumps(result, indent=2))
    print(json_dumps({n: {m: _round(v["mean"], 4) for m, v in s.items()} for n, s in result["mean"].items()}))
    return 0


def _round(value, digits: int):
    return value if value is None or not math.isfinite(value) else round(value, digits)


def cmd_pseudo_label(args: argparse.Namespace) -> int:
    from .checkpoint import load_model  # deferred: loads torch (start-up, --help)
    from .data import find_cases  # deferred: loads torch (start-up, --help)
    from .pseudo_labels import pseudo_label_cases  # deferred: loads torch (start-up, --help)

    model, meta = load_model(args.model)
    cases = [c for src in args.data for c in find_cases(src)]
    with progress_bar(total=len(cases), desc="pseudo-label", disable=args.quiet) as bar:
        manifest = pseudo_label_cases(
            model,
            meta,
            cases,
            args.out,
            mc_samples=args.mc_samples,
            keep_doubtful=args.keep_doubtful,
            keep_fraction=args.keep_fraction,
            overwrite=args.overwrite,
            device=args.device,
            progress=lambda f: bar.update(round(f * len(cases)) - bar.n),
        )
    dropped = {n: r["reason"] for n, r in manifest["cases"].items() if not r["kept"]}
    print(json.dumps({"out": str(args.out), "kept": manifest["n_kept"], "of": manifest["n_cases"], "dropped": dropped}))
    return 0


def cmd_suggest(args: argparse.Namespace) -> int:
    """``suggest --model M --data FOLDER|LIST ... --out OUT [--top K] [--diversity W]``: segment the
    unlabeled cases into OUT/cases/<case>/ (sets made earlier by this model, settings and input are
    reused; others are recomputed), rank them by the model's per-case uncertainty score
    (``suggest``), and write OUT/suggestions.csv and .json. Labeled cases are never suggested. A
    training library among --data (a folder with manifest.json) remembers each case's score under
    the model's id. Exit code 0, or 1 when some case failed (named in suggestions.json)."""
    from .checkpoint import load_model  # deferred: loads torch (start-up, --help)
    from .data import find_cases  # deferred: loads torch (start-up, --help)
    from .suggest import DEFAULT_SCORE, SUGGESTIONS_CSV, rank_cases, thumbnail, write_suggestions
    from .training_library import MANIFEST_NAME, remember_scores

    _in_range("--diversity", args.diversity, 0.0, 1.0)
    _in_range("--top", args.top, 1)
    cases = [c for src in args.data for c in find_cases(src)]
    _check_unique_names(cases, " ".join(args.data))
    unlabeled = [c for c in cases if c.label is None]
    if not unlabeled:
        where = " ".join(args.data)
        raise InputError(f"--data {where}: every one of its {len(cases)} cases is labeled; nothing to suggest")
    model, meta = load_model(args.model)
    _set_threads(args)
    score_name = meta.quality.score if meta.quality is not None else DEFAULT_SCORE
    if meta.quality is None:
        warn(f"model {meta.model_id} carries no quality rule: ranking by {DEFAULT_SCORE} (an untested choice)")
    needed = meta.quality.min_mc_samples if meta.quality is not None else 2
    if args.mc_samples < needed:
        raise InputError(f"--mc-samples {args.mc_samples}: ranking by {score_name} needs at least {needed} MC samples")
    out = Path(args.out)
    try:
        rows = segment_cases(model, meta, args, unlabeled, out / "cases", replace_stale=True)
    except KeyboardInterrupt:
        return 130
    ok = [r for r in rows.values() if r["status"] != "failed"]
    thumbs = [thumbnail(read_volume(r["input"]).array) for r in ok] if args.diversity > 0 else None
    ranked = rank_cases(ok, score_name, thumbs, args.diversity)
    shown = ranked[: args.top] if args.top else ranked
    failed = {r["case"]: r["error"] for r in rows.values() if r["status"] == "failed"}
    header = {
        "model": {"id": meta.model_id, "path": meta.path},
        "score": score_name,
        "score_source": "the model's quality flag" if meta.quality is not None else "default (no quality rule)",
        "threshold": meta.quality.threshold if meta.quality is not None else None,
        "diversity": args.diversity,
        "n_labeled_skipped": len(cases) - len(unlabeled),
        "n_ranked": len(ranked),
        "failed": failed,
    }
    write_suggestions(out, shown, header)
    for src in args.data:
        if Path(src).is_dir() and (Path(src) / MANIFEST_NAME).is_file():
            scores = {
                s.case: {
                    "score": s.score if math.isfinite(s.score) else None,
                    "score_name": score_name,
                    "doubtful": s.doubtful,
                    "input_sha256": rows[s.case]["report"].get("input_sha256"),
                }
                for s in ranked
            }
            remember_scores(src, meta.model_id, scores)
    top = [{"rank": s.rank, "case": s.case, "score": round(s.score, 5), "doubtful": s.doubtful} for s in shown[:10]]
    print(json_dumps({"out": str(out / SUGGESTIONS_CSV), "ranked": len(ranked), "failed": len(failed), "top": top}))
    return 1 if failed else 0


def cmd_adapt(args: argparse.Namespace) -> int:
    """``adapt --model M --data FOLDER|LIST ... --out MODEL.pt [--batches N]``: the model with its
    batch-norm statistics re-estimated on the cases' images (``adaptation``; labels are not read),
    written as a new model checkpoint. Prints its record (model id, source model id, cases)."""
    from .adaptation import ADAPT_BATCHES, adapt_model  # deferred: loads torch (start-up, --help)
    from .data import find_cases  # deferred: loads torch (start-up, --help)

    _in_range("--batches", args.batches, 1)
    cases = [c for src in args.data for c in find_cases(src)]
    _check_unique_names(cases, " ".join(args.data))
    _set_threads(args)
    with progress_bar(total=100, desc="adapt", disable=args.quiet or args.progress_lines) as bar:

        def update(frac: float) -> None:
            if args.progress_lines:  # for a parent process (the Slicer module) that polls our stdout
                print(f"PROGRESS {frac:.4f}", flush=True)
            else:
                bar.update(round(100 * frac) - bar.n)

        record = adapt_model(
            args.model,
            cases,
            args.out,
            batches=args.batches or ADAPT_BATCHES,
            overwrite=args.overwrite,
            device=args.device,
            progress=update,
        )
    print(
        json_dumps({"out": str(args.out), **{k: v for k, v in record.items() if k != "cases"}, "n_cases": len(cases)})
    )
    return 0


def cmd_indices(args: argparse.Namespace) -> int:

    if args.patient:
        from .data.acdc import read_acdc_patient  # deferred: loads torch (start-up, --help)

        if args.ed or args.es:
            raise InputError("give either --patient or --ed/--es, not both")
        pat = read_acdc_patient(args.patient)
        if pat.info.get("ED") is not None and int(pat.info["ED"]) == int(pat.info["ES"]):
            same_frame = warn(
                f"{Path(args.patient) / 'Info.cfg'} names frame {pat.info['ED']} for both ED and ES: "
                "the ejection fractions are not measurable"
            )
        else:
            same_frame = None
        if args.reference:
            if pat.ed.label is None or pat.es.label is None:
                raise InputError(f"{pat.name}: --reference needs the _gt files of both frames")
            ed, es = read_label(pat.ed.label), read_label(pat.es.label)
        else:
            from .checkpoint import load_model  # deferred: loads torch (start-up, --help)
            from .inference import InferenceSettings, Predictor  # deferred: loads torch (start-up, --help)

            model, meta = load_model(args.model or "cine")
            predictor = Predictor(model, meta, InferenceSettings.from_meta(meta, mc_samples=1, device=args.device))
            ed, es = (predictor.predict(read_volume(c.image)).labels for c in (pat.ed, pat.es))
    else:
        same_frame = None
        if not (args.ed and args.es):
            raise InputError("give --ed and --es segmentations, or --patient FOLDER")
        ed, es = read_label(args.ed), read_label(args.es)
    if not ed.same_grid(es):
        raise InputError("ED and ES segmentations are on different grids")

    names = {v: k for k, v in ACDC_LABELS.items()}
    for which, vol in (("ED", ed), ("ES", es)):
        src = args.ed if which == "ED" else args.es
        check_label_values(vol.array, max(ACDC_LABELS.values()) + 1, str(src or f"{which} segmentation"), names)
    spacing = args.spacing or [float(v) for v in ed.spacing]
    result = cardiac_indices(ed.array, es.array, spacing)
    if same_frame:
        result["warnings"].insert(0, same_frame)
    text = json_dumps(result, indent=2)
    if args.out:
        atomic_write_text(args.out, text)
    summary = {k: _round(v, 2) for k, v in result.items() if isinstance(v, float)}
    if result["warnings"]:
        summary["warnings"] = result["warnings"]
    print(json_dumps(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m SemiSupCardiacSegLib", description="Semi-supervised cardiac MR segmentation")
    p.add_argument(
        "--debug", action="store_true", help="on failure also print the traceback (accepted anywhere on the line)"
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    s = sub.add_parser(
        "segment",
        help="segment one volume (or a folder / .list of them); writes NRRD outputs and report.json on the input grid",
    )
    s.add_argument(
        "input",
        help=".h5, .nrrd, .nii(.gz) or .mha; or a folder or .list file of cases (batch: each "
        "case into OUT/<case>/, cases already complete skipped, OUT/summary.csv and "
        "summary.json; exit code 1 when some case failed)",
    )
    s.add_argument("--out", required=True, help="output folder (written all or nothing)")
    s.add_argument(
        "--model",
        default=None,
        help="shipped model name ("
        + "; ".join(f"'{m.name}': {', '.join(m.labels)} in {m.modality}" for m in SHIPPED.values())
        + ") or checkpoint path; default: la",
    )
    s.add_argument("--mc-samples", type=int, default=10, help="MC-dropout samples (1 = deterministic)")
    s.add_argument(
        "--mc-scope",
        choices=("decoder", "head"),
        default=None,
        help="dropout layers sampled: 'decoder' (every decoder pass re-run per sample) or 'head' (only the "
        "last dropout; V-Net models, about the cost of one pass); default: the model's",
    )
    s.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap fraction")
    s.add_argument("--no-tta", action="store_true", help="switch off the model's flip test-time augmentation")
    s.add_argument(
        "--no-localize",
        action="store_true",
        help="3D models: segment the whole field of view, not a crop around the structure a coarse pass finds",
    )
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--montage", action="store_true", help="also write montage.png")
    s.add_argument(
        "--roi-mask",
        help="a label file on the input's grid: only its nonzero voxels are segmented "
        "(the network runs on their bounding box); outputs stay on the whole grid, "
        "empty outside",
    )
    s.add_argument(
        "--es",
        help="cine: the end-systolic frame (same grid as INPUT, the end-diastolic one); its outputs "
        "go to OUT/es/ and LV/RV volumes, EF and myocardial mass into report.json",
    )
    s.add_argument(
        "--compact",
        action="store_true",
        help="store the float maps as uint8 codes (scale and offset in report.json; smaller, faster to load)",
    )
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing outputs in --out (the new set replaces the old one whole; batch: recompute every case)",
    )
    s.add_argument(
        "--allow-large",
        action="store_true",
        help="run even when the model grid is far larger than the "
        "input (a coarse volume upsampled: many windows, long)",
    )
    s.add_argument("--quiet", action="store_true")
    s.add_argument(
        "--progress-lines",
        action="store_true",
        help="print 'PROGRESS <fraction>' lines on stdout (for a parent process)",
    )
    _reading_options(s)
    s.set_defaults(func=cmd_segment)
    e = sub.add_parser("evaluate", help="per-case and mean metrics of a model on labeled cases")
    e.add_argument("--model", default=None)
    e.add_argument("--data", nargs="+", required=True, help="folder(s) or .list file(s)")
    e.add_argument("--out", required=True, help="JSON file to write")
    e.add_argument("--mc-samples", type=int, default=1)
    e.add_argument("--overlap", type=float, default=0.5)
    e.add_argument("--no-tta", action="store_true", help="switch off the model's flip test-time augmentation")
    e.add_argument("--device", default="auto")
    e.add_argument("--quiet", action="store_true")
    _reading_options(e)
    e.set_defaults(func=cmd_evaluate)
    q = sub.add_parser(
        "pseudo-label",
        help="segment unlabeled cases with a model and write the trusted ones as "
        "labeled cases (self-training; images only are read)",
    )
    q.add_argument("--model", default=None)
    q.add_argument("--data", nargs="+", required=True, help="folder(s), .list file(s) or image file(s)")
    q.add_argument("--out", required=True, help="folder for the pseudo-labeled cases and pseudo_labels.json")
    q.add_argument("--mc-samples", type=int, default=10)
    q.add_argument("--keep-doubtful", action="store_true", help="also keep cases the quality flag marks doubtful")
    q.add_argument(
        "--keep-fraction",
        type=float,
        default=None,
        help="instead of the flag: keep this fraction of the cases, the most reliable by the quality score",
    )
    q.add_argument("--overwrite", action="store_true")
    q.add_argument("--device", default="auto")
    q.add_argument("--quiet", action="store_true")
    _reading_options(q)
    q.set_defaults(func=cmd_pseudo_label)
    g = sub.add_parser(
        "suggest",
        help="rank unlabeled cases by the model's uncertainty: which case to correct next (active learning)",
    )
    g.add_argument("--model", default=None)
    g.add_argument("--data", nargs="+", required=True, help="folder(s), .list file(s) or image file(s)")
    g.add_argument("--out", required=True, help="folder: suggestions.csv/.json and the segmentations (cases/)")
    g.add_argument("--top", type=int, default=None, help="list only the K first cases")
    g.add_argument(
        "--diversity",
        type=float,
        default=0.0,
        help="weight in [0, 1] of unlikeness to the cases ranked above (0: uncertainty alone)",
    )
    g.add_argument("--mc-samples", type=int, default=10)
    g.add_argument("--no-tta", action="store_true", help="switch off the model's test-time augmentation")
    g.add_argument("--device", default="auto")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--overwrite", action="store_true", help="recompute every case's segmentation")
    g.add_argument("--quiet", action="store_true")
    g.add_argument("--progress-lines", action="store_true", help=argparse.SUPPRESS)
    _reading_options(g)
    g.set_defaults(
        func=cmd_suggest,
        mc_scope=None,
        no_localize=False,
        overlap=0.5,
        allow_large=False,
        compact=True,
        montage=False,
        es=None,
        roi_mask=None,
    )
    a = sub.add_parser(
        "adapt",
        help="adapt a model to another scanner's images without labels (batch-norm statistics re-estimated)",
    )
    a.add_argument("--model", default=None)
    a.add_argument("--data", nargs="+", required=True, help="folder(s), .list file(s) or image file(s) of that scanner")
    a.add_argument("--out", required=True, help="the adapted model checkpoint (.pt)")
    a.add_argument("--batches", type=int, default=None, help="batches of 4 training crops to estimate them on (50)")
    a.add_argument("--device", default="auto")
    a.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    a.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    a.add_argument("--quiet", action="store_true")
    a.add_argument("--progress-lines", action="store_true", help=argparse.SUPPRESS)
    a.set_defaults(func=cmd_adapt)
    c = sub.add_parser("indices", help="LV/RV volumes, ejection fractions, myocardial mass and areas from ED + ES")
    c.add_argument("--ed", help="end-diastolic segmentation (labels 1 RV, 2 Myo, 3 LV)")
    c.add_argument("--es", help="end-systolic segmentation on the same grid")
    c.add_argument("--patient", help="ACDC patient folder (Info.cfg names ED/ES); segmented with --model")
    c.add_argument("--reference", action="store_true", help="with --patient: use its _gt labels instead of segmenting")
    c.add_argument("--model", default=None, help="cine model for --patient (default: cine)")
    c.add_argument(
        "--spacing", type=float, nargs=3, help="voxel spacing in mm (i j k), overriding the files' (needed for .h5)"
    )
    c.add_argument("--h5-layout", choices=("xyz", "slices_first"), default=None, help=argparse.SUPPRESS)
    c.add_argument("--device", default="auto")
    c.add_argument("--out", help="JSON file to write (all indices, per-slice areas included)")
    c.set_defaults(func=cmd_indices)
    return p


def _reading_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("SX", "SY", "SZ"),
        help="voxel spacing in mm (i j k) of the input files, replacing theirs: for files that store none "
        "(.h5) or an invalid one; stated in report.json's assumptions",
    )
    p.add_argument(
        "--h5-layout",
        choices=("xyz", "slices_first"),
        default=None,
        help=".h5 array layout: 'xyz' (LA2018 (X, Y, Z)) or 'slices_first' (ACDC (slices, H, W)); "
        "default: told apart by where the short axis is (stated when doubtful)",
    )


def describe_failure(exc: BaseException) -> str:
    """One line naming the file and the cause of a failed command."""

    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else ""
    if isinstance(exc, InputError):  # its message names the file and the problem
        return first or exc.__class__.__name__
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    if isinstance(exc, MemoryError):
        return (
            "out of memory"
            + (f": {first}" if first else "")
            + " (try a smaller input, fewer --mc-samples or --threads)"
        )
    if isinstance(exc, RuntimeError) and first:  # e.g. out of GPU memory, with what fits
        return first
    return (
        f"{exc.__class__.__name__}: {first} (an unexpected failure; --debug shows where)"
        if first
        else f"{exc.__class__.__name__} (an unexpected failure; --debug shows where)"
    )


def _show_warning(message, category, filename, lineno, file=None, line=None):

    if issubclass(category, InputWarning):
        print(f"warning: {message}", file=sys.stderr, flush=True)
    else:
        _show_warning.default(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    """Run a command; returns the exit code (0 done, 2 failed with one ``error:`` line on stderr,
    130 interrupted). Never raises."""

    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad option (2, its one line already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)
        _show_warning.default = warnings.showwarning
        warnings.showwarning = _show_warning
        try:
            check_args(args)
            with reading_overrides(spacing=getattr(args, "spacing", None), h5_layout=getattr(args, "h5_layout", None)):
                return args.func(args)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr, flush=True)
            return 130
        except Exception as exc:  # noqa: BLE001 - any failure: one line naming the file and the cause
            if debug:
                traceback.print_exc()
            try:
                message = describe_failure(exc)
            except Exception:  # noqa: BLE001 - never let the report itself fail
                message = exc.__class__.__name__
            print(f"error: {message}", file=sys.stderr, flush=True)
            return 2
