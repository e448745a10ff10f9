"""The files of a run folder: ``last.pt`` (resume), ``best.pt``, ``swa.pt``, ``model.pt``, ``config.json``.

Every checkpoint is written from the payload in memory (``best.pt`` and ``model.pt`` from the same
payload, never re-read); a resumed run reads ``last.pt`` (checked against the config) and, when an
earlier slice validated, ``best.pt`` (the model ``model.pt`` falls back to).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..atomic import atomic_write_text
from ..checkpoint import (
    build_model_from_checkpoint,
    load_checkpoint,
    model_id,
    now_iso,
    save_checkpoint,
    state_dict_for_export,
)
from ..config_check import architecture_differences, config_differences
from ..data.transforms import AUGMENT_PLANE
from ..errors import InputError, warn
from ..jsonout import dumps as json_dumps
from ..methods import Method
from .optim import Optimizers

RESUME_KEYS = ("method_state", "optimizers", "torch_rng", "history", "iteration")


def read_resume(out: Path, resume: bool, config: dict) -> dict | None:
    """``out/last.pt`` when resuming (checked: a resume checkpoint of this config, except
    ``config_check.RESUME_MAY_CHANGE``), None for a fresh run; refuses a fresh run over an old one.
    A run that continues in another ``precision`` than it ran in (float32 for a run saved before the
    key existed) is warned about."""
    last = out / "last.pt"
    if not last.exists():
        return None
    if not resume:
        raise InputError(f"{out} already holds a training run (last.pt); use --resume or another --out")
    ck = load_checkpoint(last)
    for key in RESUME_KEYS:
        if key not in ck:
            raise InputError(f"{last}: not a resume checkpoint (no '{key}')")
    saved = ck.get("config")
    if saved is not None:
        try:
            saved = json.loads(saved) if isinstance(saved, str) else dict(saved)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{last}: its saved config cannot be read ({exc})") from None
        diffs = config_differences(saved, json.loads(json.dumps(config)))
        if diffs:
            shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
            raise InputError(
                f"{last}: --resume with a config that differs from the run's (saved -> now): {shown}; "
                "resume with the run's config, or train into another --out"
            )
    before, now = (saved or {}).get("precision", "float32"), config.get("precision", "float32")
    if before != now:
        warn(
            f"{out}: the run ran in {before} and continues in {now} (precision; set it in the config to keep {before})"
        )
    return ck


def read_init(config: dict) -> dict | None:
    """The ``init`` model checkpoint (fine-tuning), checked to have the config's architecture; None without."""
    if not config.get("init"):
        return None
    ck = load_checkpoint(config["init"])
    diffs = architecture_differences(
        ck.get("arch", "vnet"), dict(ck.get("network") or {}), config["arch"], dict(config["network"])
    )
    if diffs:
        raise InputError(
            f"{config['init']}: --init checkpoint's architecture differs from the config's "
            f"(checkpoint vs config): {'; '.join(diffs)}"
        )
    return ck


def load_init_weights(method: Method, init: dict, config: dict) -> None:
    """Start ``method.model`` from the weights of the ``init`` checkpoint."""
    net = build_model_from_checkpoint(init, config["init"])
    try:
        method.model.load_state_dict(net.state_dict())
    except RuntimeError as exc:  # the method changes the network (e.g. a separate SDM decoder)
        raise InputError(
            f"{config['init']}: its weights do not fit method {config['method']}'s network "
            f"({str(exc).splitlines()[0][:200]})"
        ) from None


class RunFiles:
    """Writes a run's checkpoints; payloads are plain dicts (``checkpoint`` format). Only rank 0 makes one."""

    def __init__(self, out: Path, config: dict, training_data: dict):
        """training_data: ``TrainingData.summary()``, recorded in every model checkpoint."""
        self.out = out
        self.config = config
        self.training_data = training_data

    def write_config(self) -> None:
        atomic_write_text(self.out / "config.json", json_dumps(self.config, indent=2))

    def model_payload(
        self, method: Method, iteration: int, validation: dict | None, model: torch.nn.Module | None = None
    ) -> dict:
        """A model checkpoint of ``model`` (default ``method.model``; the SWA average at the end). Its weights
        are copies, so the payload can be kept while training goes on."""
        cfg = self.config
        net = model if model is not None else method.model
        sd = {k: v.clone() for k, v in state_dict_for_export(net, cfg.get("export_dtype", "float32")).items()}
        return {
            "kind": "model",
            "arch": method.arch,
            "network": method.network_params,
            "state_dict": sd,
            "preprocessing": cfg["preprocessing"],
            "patch_size": list(cfg.get("inference_patch_size") or cfg["patch_size"]),
            "labels": {str(k): v for k, v in cfg["labels"].items()},
            "method": method.name,
            "method_params": method.config,
            "iteration": iteration,
            "training_data": self.training_data,
            "validation": validation or {},
            # Training augments with rot90/flips in AUGMENT_PLANE of model space (CropDataset), so
            # flips of those axes are test-time augmentations the network is trained to respect.
            "inference": {"tta_flip_axes": list(AUGMENT_PLANE)},
            "model_id": model_id(sd),
            "created": now_iso(),
        }

    def save_resume(
        self, method: Method, optimizers: Optimizers, iteration: int, history: dict, swa_state: dict | None
    ) -> None:
        """``last.pt``: the model payload plus everything a resumed run needs to continue exactly."""
        payload = self.model_payload(method, iteration, history.get("best"))
        payload.update(
            kind="resume",
            method_state=method.state_dict(),
            optimizers=optimizers.state_dict(),
            torch_rng=torch.get_rng_state(),
            history=history,
            config=json.dumps(self.config),
        )
        if swa_state is not None:
            payload["swa_state"] = swa_state
        save_checkpoint(self.out / "last.pt", payload)

    def save(self, name: str, payload: dict) -> None:
        """``best.pt``, ``swa.pt`` or ``model.pt`` from ``payload``."""
        save_checkpoint(self.out / name, payload)

    def read_best(self) -> dict:
        """An earlier slice's ``best.pt`` (resume)."""
        return load_checkpoint(self.out / "best.pt")
