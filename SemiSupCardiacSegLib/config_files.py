"""Training configs as JSON files that compose: the one loader (``load_config``) of every config file.

A config file may name the files it builds on, ``"extends": ["protocols/la_16labeled.json",
"methods/sassnet.json"]`` (paths relative to the file, a single string also accepted); they are
composed in order with ``training.merge_config`` (nested objects merged key by key, anything else
replaced) and the file's own keys last, so each file states only what it changes. The composed
config is then checked whole (``config_check.validate_config`` on its merge with
``training.DEFAULTS``). Every refusal (unreadable or missing file, a cycle of ``extends``, an
unknown key or value) is one ``InputError`` naming the file. Layout of the shipped files:
docs/configs.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config_check import validate_config, with_method_defaults
from .errors import InputError
from .training import DEFAULTS, merge_config

#: The key naming the files a config builds on.
EXTENDS = "extends"
#: The shipped configs (``Training/train.py --method NAME`` reads ``CONFIGS / NAME.json``).
CONFIGS = Path(__file__).resolve().parent / "configs"
#: The repository (or install) folder holding the library: the last base of relative data paths.
ROOT = Path(__file__).resolve().parent.parent


def load_config(path: str | Path, overrides: dict | None = None) -> dict:
    """The composed config of ``path`` (``extends`` resolved, own keys last) with its
    ``method_params`` completed by its method's ``defaults`` (the files state only what they
    change; the loaded config spells out every parameter the method runs with), then
    ``overrides`` (e.g. the command line's) merged last and completed for the method they may
    name, checked whole. Not merged with ``DEFAULTS`` (the Trainer does that). Raises InputError
    naming the file.

    Choice: with ``overrides`` naming another method, the file's method parameters (stated or
    default) carry over and the other method's defaults fill the rest, as when the files spelled
    out every parameter (``--config sassnet.json --method dtc`` trains DTC with SASSNet's Dice loss)."""
    path = Path(path)
    config = with_method_defaults(_compose(path, ()))
    if overrides:
        config = with_method_defaults(merge_config(config, overrides))
    try:
        validate_config(merge_config(DEFAULTS, config))
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return config


def _compose(path: Path, chain: tuple[Path, ...]) -> dict:
    """``path``'s own keys over the composition of the files it extends; chain: the files that led here."""
    key = path.resolve()
    if key in chain:
        loop = " -> ".join(str(p) for p in chain[chain.index(key) :] + (key,))
        raise InputError(f"{path}: '{EXTENDS}' forms a cycle ({loop})")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" (extended by {chain[-1]})" if chain else ""
        raise InputError(f"cannot read config {path}{where}: {exc}") from exc
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a config must be a JSON object, got {type(raw).__name__}")
    parents = raw.pop(EXTENDS, [])
    parents = [parents] if isinstance(parents, str) else parents
    if not isinstance(parents, list) or not all(isinstance(p, str) and p for p in parents):
        raise InputError(f"{path}: '{EXTENDS}' must be a file name or a list of them, got {parents!r}")
    config: dict = {}
    for parent in parents:
        config = merge_config(config, _compose(path.parent / parent, chain + (key,)))
    return merge_config(config, raw)


def resolve_data_paths(config: dict, config_path: str | Path | None = None) -> dict:
    """``config`` with its relative ``data`` entries and ``validation.list`` made absolute, each
    from the first of: the current folder, the config file's folder, ``ROOT`` where it exists
    (left as given where none has it: the Trainer then names the missing path)."""
    bases = [Path.cwd()] + ([Path(config_path).resolve().parent] if config_path else []) + [ROOT]

    def resolve(entry: str) -> str:
        return next((str(b / entry) for b in bases if (b / entry).exists()), entry)

    out = dict(config)
    if "data" in out:
        out["data"] = [resolve(s) for s in (out["data"] if isinstance(out["data"], list) else [out["data"]])]
    val_list = (out.get("validation") or {}).get("list")
    if val_list:
        out["validation"] = {**out["validation"], "list": resolve(val_list)}
    return out
