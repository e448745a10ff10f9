"""A training library: a folder of cases the user adds in Slicer (``NAME.nrrd`` and, once labeled,
``NAME_label.nrrd``) and ``manifest.json``, the list of its cases in the order they were added.

The manifest is ``{"cases": [{"name", "image", "label", "labeled", ...}, ...]}``. Each entry may
also hold ``scores``: per model id, the per-case uncertainty score ``suggest`` ranked the case by
(``{"score", "score_name", "doubtful", "input_sha256"}``), so the module can list the unlabeled cases
ranked without segmenting them again. Every write replaces the whole file atomically; a manifest that
is not valid is refused (ValueError naming it) and never written to.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from .atomic import atomic_write_text

MANIFEST_NAME = "manifest.json"


def read_manifest(library: str | Path) -> list[dict]:
    """The cases ``library/manifest.json`` lists ([] when there is none). A file that is not a valid
    manifest ({"cases": [{...}, ...]}) raises ValueError naming it: nothing is ever appended to it."""
    path = Path(library) / MANIFEST_NAME
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{path} is not valid JSON ({str(exc).splitlines()[0]}); repair or move it away before "
            "adding cases (nothing was written)"
        ) from None
    except OSError as exc:
        raise ValueError(f"{path} cannot be read ({exc.strerror or exc}); nothing was written") from None
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
        raise ValueError(
            f'{path} is not a training-library manifest (expected {{"cases": [{{...}}, ...]}}); '
            "repair or move it away before adding cases (nothing was written)"
        )
    return cases


def _write(library: Path, cases: list[dict]) -> Path:
    path = Path(library) / MANIFEST_NAME
    atomic_write_text(path, json.dumps({"cases": cases}, indent=2))
    return path


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def append_to_manifest(library: str | Path, entry: dict) -> Path:
    """Add ``entry`` (plus the time) to ``library/manifest.json``, atomically (the list of cases the
    library holds, in the order they were added). A corrupt manifest raises ValueError (``read_manifest``)."""
    cases = read_manifest(library)
    cases.append({**entry, "added": _now()})
    return _write(Path(library), cases)


def update_manifest_entry(library: str | Path, name: str, changes: dict) -> Path:
    """Merge ``changes`` into the entry of case ``name`` (plus the time, ``updated``), atomically.
    ValueError when the manifest does not list the case."""
    cases = read_manifest(library)
    hit = [c for c in cases if c.get("name") == name]
    if not hit:
        raise ValueError(f"{Path(library) / MANIFEST_NAME} lists no case '{name}'")
    hit[0].update(changes, updated=_now())
    return _write(Path(library), cases)


def remember_scores(library: str | Path, model_id: str, scores: dict[str, dict]) -> Path | None:
    """Store ``scores`` (case name -> {"score", ...}) under each listed case's ``scores[model_id]``,
    in one atomic write. Cases the manifest does not list are left out; None when it lists none of them."""
    cases = read_manifest(library)
    listed = [c for c in cases if c.get("name") in scores]
    if not listed:
        return None
    for c in listed:
        c.setdefault("scores", {})[model_id] = scores[c["name"]]
    return _write(Path(library), cases)
