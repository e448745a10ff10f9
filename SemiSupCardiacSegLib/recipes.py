"""Recipes: how a shipped model is built, as data (``recipes/*.json``) and one runner (``run_recipe``).

A recipe is ``{"stages": [stage, ...]}`` run in order, stage ``S`` into ``OUT/S/``. Kinds and keys
(keys starting with ``_`` are notes; paths are relative to the recipe file):

* ``train``: ``config`` (a config file, ``config_files.load_config``), ``init`` (optional: a model
  checkpoint to start from), ``pseudo_labels`` (optional: pseudo-labeled cases, replacing the
  config's). Outputs the Trainer's ``model.pt`` (default), ``last.pt`` (last iteration), ``best.pt``.
* ``pseudo-label``: ``model``, ``data`` (folder(s) or .list file(s); relative data paths as in
  ``config_files.resolve_data_paths``), ``lines`` (optional ``[first, last]``, 1-based and
  inclusive: those cases of ``data`` in its order), ``mc_samples`` (10), ``keep_doubtful``,
  ``keep_fraction`` (``pseudo_labels.pseudo_label_cases``). Outputs the folder of cases.
* ``export``: ``model``, ``tta_rot90``, ``deterministic_mask``, ``quality``, ``choice``,
  ``fine_tune_from``: the options of
  ``Training/export_model.py``. Outputs ``model.pt``.
* ``quality``: ``model``, ``mc_samples`` (10), ``unused_labels``, ``folds``:
  ``benchmarks/uncertainty_quality.py`` on the model's held-out cases (with ``unused_labels`` also
  the training cases whose labels it never read; ``folds``: the flag chosen by cross-validation).
  Outputs ``uncertainty_quality_model.json`` (what ``export``'s ``quality`` reads).

A checkpoint or file option (``init``, ``pseudo_labels``, ``model``, ``quality``, ``fine_tune_from``)
is either a path or ``{"stage": NAME}`` (an earlier stage's default output) or ``{"stage": NAME,
"file": "last.pt"}`` (a file in its folder). The whole recipe (kinds, keys, stage references, every
train stage's config) is checked before any stage runs. A stage is complete when its marker
``OUT/S/recipe_stage.json`` exists (written atomically, last): a rerun skips it; an interrupted
train stage resumes from its ``last.pt``; an interrupted other stage runs again. Every refusal is
an ``InputError`` naming the recipe file.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write_text
from .checkpoint import load_model, now_iso
from .config_files import ROOT, load_config, resolve_data_paths
from .data import find_cases
from .errors import InputError
from .jsonout import dumps as json_dumps
from .pseudo_labels import pseudo_label_cases
from .training import Trainer

#: The file that marks a stage complete (in the stage's folder).
MARKER = "recipe_stage.json"
#: The file ``benchmarks/uncertainty_quality.py`` writes for a model file named ``model.pt``.
QUALITY_RESULT = "uncertainty_quality_model.json"
#: Per kind: the keys a stage may have besides ``name`` and ``kind``, and the keys holding a file
#: or stage reference.
KEYS = {
    "train": {"config", "init", "pseudo_labels"},
    "pseudo-label": {"model", "data", "lines", "mc_samples", "keep_doubtful", "keep_fraction"},
    "export": {"model", "tta_rot90", "deterministic_mask", "quality", "choice", "fine_tune_from"},
    "quality": {"model", "mc_samples", "unused_labels", "folds"},
}
REFERENCES = ("init", "pseudo_labels", "model", "quality", "fine_tune_from")
#: A stage's output when a reference names no file.
DEFAULT_OUTPUT = {"train": "model.pt", "pseudo-label": "", "export": "model.pt", "quality": QUALITY_RESULT}
STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Stage:
    """One stage of a recipe: its name, kind and settings (the JSON object)."""

    name: str
    kind: str
    spec: dict


def load_recipe(path: str | Path) -> list[Stage]:
    """The stages of the recipe file ``path``, checked whole (see the module docstring)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read recipe {path}: {exc}") from exc
    stages_raw = raw.get("stages") if isinstance(raw, dict) else None
    if not isinstance(stages_raw, list) or not stages_raw:
        raise InputError(f"{path}: a recipe is an object with a non-empty list 'stages'")
    unknown = sorted(k for k in raw if k != "stages" and not str(k).startswith("_"))
    if unknown:
        raise InputError(f"{path}: unknown recipe key(s) {', '.join(unknown)}")
    stages: list[Stage] = []
    for i, spec in enumerate(stages_raw, 1):
        stages.append(_check_stage(path, i, spec, {s.name: s.kind for s in stages}))
    return stages


def _check_stage(path: Path, number: int, spec, earlier: dict[str, str]) -> Stage:
    if not isinstance(spec, dict):
        raise InputError(f"{path}: stage {number} must be an object, got {spec!r}")
    name = spec.get("name")
    if not isinstance(name, str) or not STAGE_NAME.match(name):
        raise InputError(f"{path}: stage {number} needs a 'name' of letters, digits, '.', '_' or '-', got {name!r}")
    where = f"{path}: stage '{name}'"
    if name in earlier:
        raise InputError(f"{where}: the name is used by an earlier stage")
    kind = spec.get("kind")
    if kind not in KEYS:
        raise InputError(f"{where}: unknown kind {kind!r}; known: {', '.join(KEYS)}")
    settings = {k: v for k, v in spec.items() if k not in ("name", "kind") and not str(k).startswith("_")}
    unknown = sorted(set(settings) - KEYS[kind])
    if unknown:
        raise InputError(
            f"{where}: unknown key(s) {', '.join(unknown)} for kind {kind}; known: {', '.join(sorted(KEYS[kind]))}"
        )
    required = {"train": ("config",), "pseudo-label": ("model", "data"), "export": ("model",), "quality": ("model",)}
    missing = [k for k in required[kind] if k not in settings]
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)}")
    for key in REFERENCES:
        ref = settings.get(key)
        if isinstance(ref, dict):
            if set(ref) - {"stage", "file"} or not isinstance(ref.get("stage"), str):
                raise InputError(f'{where}: {key} must be a path or {{"stage": NAME[, "file": FILE]}}, got {ref!r}')
            if ref["stage"] not in earlier:
                raise InputError(
                    f"{where}: {key} names stage {ref['stage']!r}, which is not an earlier stage of the recipe "
                    f"(earlier: {', '.join(earlier) or 'none'})"
                )
        elif ref is not None and not isinstance(ref, str):
            raise InputError(f"{where}: {key} must be a path or a stage reference, got {ref!r}")
    lines = settings.get("lines")
    if lines is not None and not (
        isinstance(lines, list)
        and len(lines) == 2
        and all(isinstance(n, int) and n >= 1 for n in lines)
        and lines[0] <= lines[1]
    ):
        raise InputError(f"{where}: lines must be [first, last] (1-based), got {lines!r}")
    if kind == "train":  # refused here, before any stage runs
        try:
            load_config(path.parent / settings["config"])
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
    return Stage(name, kind, spec)


def run_recipe(
    path: str | Path,
    out_root: str | Path,
    resume: bool = True,
    only: str | None = None,
    stop_after: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Run the recipe ``path`` into ``out_root/<stage>/``; -> {stage: "done" | "skipped" | "stopped"}.

    resume: skip complete stages and continue an interrupted train stage (False: a stage folder
    that exists is refused). only: run that stage alone (the stages it reads must be complete).
    stop_after: stop the train stage being run after this many iterations of this call (its
    ``last.pt`` saved, no marker: a rerun continues it); the recipe stops there."""
    path = Path(path)
    out_root = Path(out_root)
    stages = load_recipe(path)
    names = [s.name for s in stages]
    if only is not None and only not in names:
        raise InputError(f"{path}: no stage {only!r}; stages: {', '.join(names)}")
    by_name = {s.name: s for s in stages}
    status: dict[str, str] = {}
    for stage in stages:
        if only is not None and stage.name != only:
            continue
        folder = out_root / stage.name
        if (folder / MARKER).is_file() and resume:
            status[stage.name] = "skipped"
            continue
        if folder.exists() and not resume:
            raise InputError(f"{folder} exists: resume, or run the recipe into another folder")
        refs = {k: _resolve(path, out_root, by_name, stage, k) for k in REFERENCES if stage.spec.get(k) is not None}
        finished = _RUNNERS[stage.kind](path, stage, folder, refs, stop_after, device, progress)
        if not finished:
            status[stage.name] = "stopped"
            return status
        record = {"stage": stage.spec, "recipe": str(path), "inputs": {k: str(v) for k, v in refs.items()}}
        atomic_write_text(folder / MARKER, json_dumps({**record, "finished": now_iso()}, indent=2))
        status[stage.name] = "done"
    return status


def _resolve(path: Path, out_root: Path, by_name: dict[str, Stage], stage: Stage, key: str) -> Path:
    """The file a stage's ``key`` names: a path (relative to the recipe) or an earlier stage's output."""
    ref = stage.spec[key]
    if isinstance(ref, str):
        return path.parent / ref
    source = by_name[ref["stage"]]
    folder = out_root / source.name
    if not (folder / MARKER).is_file():
        raise InputError(f"{path}: stage '{stage.name}' needs stage '{source.name}', which is not complete in {folder}")
    return folder / ref.get("file", DEFAULT_OUTPUT[source.kind])


def _train(path: Path, stage: Stage, folder: Path, refs: dict, stop_after, device: str, progress: bool) -> bool:
    config_path = path.parent / stage.spec["config"]
    overrides = {k: str(refs[k]) for k in ("init", "pseudo_labels") if k in refs}
    config = resolve_data_paths(load_config(config_path, overrides), config_path)
    resume = (folder / "last.pt").is_file()  # an interrupted run of this stage
    result = Trainer(config, folder, device=device, progress=progress).run(resume=resume, stop_after=stop_after)
    return not result["stopped_early"]


def _pseudo_label(path: Path, stage: Stage, folder: Path, refs: dict, stop_after, device: str, progress: bool) -> bool:
    spec = stage.spec
    sources = resolve_data_paths({"data": spec["data"]}, path)["data"]
    cases = [c for s in sources for c in find_cases(s)]
    if spec.get("lines"):
        first, last = spec["lines"]
        if last > len(cases):
            raise InputError(f"{path}: stage '{stage.name}': lines {first}-{last} outside the {len(cases)} cases")
        cases = cases[first - 1 : last]
    model, meta = load_model(refs["model"])
    pseudo_label_cases(
        model,
        meta,
        cases,
        folder,
        mc_samples=int(spec.get("mc_samples", 10)),
        keep_doubtful=bool(spec.get("keep_doubtful", False)),
        keep_fraction=spec.get("keep_fraction"),
        overwrite=True,  # no marker: an earlier attempt is incomplete as a stage
        device=device,
    )
    return True


def _export(path: Path, stage: Stage, folder: Path, refs: dict, stop_after, device: str, progress: bool) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    args = ["--model", refs["model"], "--out", folder / "model.pt", "--overwrite"]
    args += ["--tta-rot90"] if stage.spec.get("tta_rot90") else []
    args += ["--deterministic-mask"] if stage.spec.get("deterministic_mask") else []
    args += ["--quality", refs["quality"]] if "quality" in refs else []
    args += ["--fine-tune-from", refs["fine_tune_from"]] if "fine_tune_from" in refs else []
    args += ["--choice", stage.spec["choice"]] if stage.spec.get("choice") else []
    _script(path, stage, ROOT / "Training" / "export_model.py", args)
    return True


def _quality(path: Path, stage: Stage, folder: Path, refs: dict, stop_after, device: str, progress: bool) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    args = ["--model", refs["model"], "--out-dir", folder, "--mc-samples", str(int(stage.spec.get("mc_samples", 10)))]
    args += ["--unused-labels"] if stage.spec.get("unused_labels") else []
    args += ["--folds", str(int(stage.spec["folds"]))] if stage.spec.get("folds") else []
    _script(path, stage, ROOT / "benchmarks" / "uncertainty_quality.py", args)
    if not (folder / QUALITY_RESULT).is_file():
        raise InputError(f"{path}: stage '{stage.name}' measured nothing (the model's held-out cases not found?)")
    return True


def _script(path: Path, stage: Stage, script: Path, args: list) -> None:
    """Run a repository script (a separate process: the scripts are command lines, not library code)."""
    if not script.is_file():
        raise InputError(f"{path}: stage '{stage.name}' needs {script.name}, found only in a repository checkout")
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()] or [f"exit code {proc.returncode}"]
        raise InputError(f"{path}: stage '{stage.name}': {script.name} failed: {lines[-1]}")


_RUNNERS = {"train": _train, "pseudo-label": _pseudo_label, "export": _export, "quality": _quality}
