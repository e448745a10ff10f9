"""Checkpoints: one file holding weights and everything needed to use them, written atomically.

Two kinds, both plain dicts of tensors and JSON-like values, so ``torch.load(weights_only=True)``
reads them (no pickle code execution):
* model checkpoint (``kind = 'model'``): ``arch``, ``network`` (architecture params),
  ``state_dict`` (optionally stored float16 to halve the size; cast back to float32 on load),
  ``preprocessing``, ``patch_size``, ``labels`` ({value: name}), ``method`` and its config,
  ``training_data`` summary, ``validation`` metrics, ``iteration``, ``model_id``, ``created``;
  read and checked as one ``model_meta.ModelMeta`` (``meta_version``; see there).
* resume checkpoint (``kind = 'resume'``): the model checkpoint's fields plus every network of
  the method, optimizer states, RNG state and history.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io as _io
import os
from pathlib import Path

import torch

from .atomic import atomic_write_bytes
from .errors import InputError
from .model_meta import ModelMeta
from .networks import build_network
from .shipped import SHIPPED

FORMAT = "semisupcardiacseg-checkpoint/1"


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """torch.save ``payload`` (with format tag) to ``path`` atomically."""
    payload = {"format": FORMAT, **payload}
    buf = _io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint with ``weights_only=True``; bad files raise InputError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise InputError(
            f"{path.name}: not a loadable checkpoint (corrupt, truncated or unsafe pickle): {msg[:200]}"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(f"{path.name}: not a SemiSupCardiacSeg checkpoint (format tag missing)")
    return ckpt


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    """A shipped model name ('la') or a path -> checkpoint path. None = the shipped LA model."""
    name = "la" if model is None else str(model)
    if name in SHIPPED:
        return SHIPPED[name].path
    return Path(name)


def state_dict_for_export(model: torch.nn.Module, dtype: str = "float32") -> dict[str, torch.Tensor]:
    """Weights on CPU; floating tensors cast to ``dtype`` ('float32' or 'float16')."""
    dt = {"float32": torch.float32, "float16": torch.float16}[dtype]
    return {
        k: (v.detach().cpu().to(dt) if v.is_floating_point() else v.detach().cpu())
        for k, v in model.state_dict().items()
    }


def model_id(state_dict: dict[str, torch.Tensor]) -> str:
    """Short content hash of the weights (first 12 hex digits of SHA-256)."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def build_model_from_checkpoint(ckpt: dict, name: str | os.PathLike = "checkpoint") -> torch.nn.Module:
    """Rebuild the network and load its weights (float32), in eval mode; ``name`` (the file) is
    named in the errors."""
    name = Path(name).name if name != "checkpoint" else name
    for key in ("arch", "network", "state_dict"):
        if key not in ckpt:
            raise InputError(f"{name}: checkpoint has no '{key}' (a required metadata key)")
    try:
        model = build_network(ckpt["arch"], dict(ckpt["network"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{name}: checkpoint has an unusable architecture description: {exc}") from exc
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k0 = wrong[0]
            parts.append(
                f"{len(wrong)} of another shape (e.g. {k0}: {tuple(state[k0].shape)} vs {tuple(expected[k0].shape)})"
            )
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise InputError(
            f"{name}: checkpoint weights do not fit architecture {ckpt['arch']} {dict(ckpt['network'])}: "
            f"{'; '.join(parts)}"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(
            f"{name}: checkpoint weights do not fit architecture {ckpt['arch']} {ckpt['network']}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    return model.eval()


#: Keys only resume checkpoints carry (training state, not needed to run the model).
RESUME_ONLY_KEYS = ("method_state", "optimizers", "torch_rng", "history", "config", "swa_state")


def model_payload_from_resume(ckpt: dict) -> dict:
    """A resume checkpoint (``last.pt``) -> a model checkpoint of the same weights (kind 'model')."""
    return {**{k: v for k, v in ckpt.items() if k not in RESUME_ONLY_KEYS}, "kind": "model"}


def read_model_meta(model: str | os.PathLike | None = None) -> tuple[ModelMeta, dict]:
    """Shipped name or path -> (its validated metadata, the raw checkpoint dict), without building
    the network. InputError naming the file for a bad file or metadata."""
    path = resolve_model_path(model)
    ckpt = load_checkpoint(path)
    meta = ModelMeta.from_dict({k: v for k, v in ckpt.items() if k not in RESUME_ONLY_KEYS}, path.name, str(path))
    return meta, ckpt


def load_model(model: str | os.PathLike | None = None) -> tuple[torch.nn.Module, ModelMeta]:
    """Shipped name or path -> (network in eval mode on CPU, its validated metadata)."""
    meta, ckpt = read_model_meta(model)
    return build_model_from_checkpoint(ckpt, meta.path), meta
