"""Adapting a model to another scanner without a label: its batch-norm statistics re-estimated on
that scanner's images (AdaBN, Li et al., Pattern Recognition 2018).

Batch norm holds the mean and variance of every feature over the training images; images of
another scanner or protocol shift those features, and a network normalizing them with the old
statistics sees inputs it was never trained on. Re-estimating the statistics on the new images
(every weight kept) removes that part of the shift. Measured in ``benchmarks/correction_loop.py``:
on the LA cases re-acquired as another protocol it gives back more of the lost Dice than a
fine-tune on corrected cases does.

The statistics are those of training crops of the given images (the model's patch size, its
rotations and flips; ``torch.optim.swa_utils.update_bn``: the cumulative mean over the batches,
the network in train mode as in training, where the dropout before the heads is active too), the
same pass SWA uses for its averaged weights. Labels are never read. The quality flag is kept: it
was measured on the model before adaptation (the checkpoint says so in ``adapted_batch_norm``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import InputError

#: Batches of ``ADAPT_BATCH_SIZE`` crops the statistics are estimated from (SWA's default pass).
ADAPT_BATCHES = 50
ADAPT_BATCH_SIZE = 4


def batch_norm_layers(net: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def adapt_batch_norm(
    net: torch.nn.Module,
    meta,
    cases: Sequence,
    batches: int = ADAPT_BATCHES,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: Callable[[float], None] | None = None,
) -> torch.nn.Module:
    """Re-estimate ``net``'s batch-norm statistics on ``cases`` (``data.CaseFile``; only their images
    are read, in model space by ``meta.preprocessing``), in place; returns ``net`` in eval mode.

    batches: crops batches (``ADAPT_BATCH_SIZE`` crops of ``meta.patch_size`` voxels, cases drawn at
    random with replacement, seeded by ``seed``). InputError where the network has no batch norm or
    no case is given."""
    from torch.optim.swa_utils import update_bn

    from .data.datasets import CaseFile, CropDataset, load_case
    from .inference.settings import resolve_device

    device = resolve_device(device)

    if not batch_norm_layers(net):
        raise InputError(
            f"{meta.path or 'the model'}: the network has no batch normalization to adapt "
            f"(network.normalization = {meta.network.get('normalization')!r})"
        )
    if not cases:
        raise InputError("adapt: no case to estimate the statistics on")
    if batches < 1:
        raise InputError(f"adapt: --batches must be >= 1, got {batches}")
    images = []
    for i, c in enumerate(cases):
        images.append(load_case(CaseFile(c.name, c.image, None), meta.preprocessing, meta.num_classes))
        if progress is not None:
            progress(0.5 * (i + 1) / len(cases))
    crops = CropDataset(images, tuple(meta.patch_size), meta.num_classes, augment=True, with_sdm=False)
    rng = np.random.default_rng(seed)
    draws = [
        [
            (int(r), int(s))
            for r, s in zip(
                rng.integers(0, len(images), ADAPT_BATCH_SIZE), rng.integers(0, 2**31 - 1, ADAPT_BATCH_SIZE)
            )
        ]
        for _ in range(batches)
    ]

    def loader():
        for b, keys in enumerate(draws):
            yield torch.stack([crops[k]["image"] for k in keys]).to(device)
            if progress is not None:
                progress(0.5 + 0.5 * (b + 1) / batches)

    net.to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # the dropout masks too: the same statistics for the same call
        update_bn(loader(), net)
    return net.eval()


def adapt_model(
    model: str | os.PathLike | None,
    cases: Sequence,
    out: str | os.PathLike,
    batches: int = ADAPT_BATCHES,
    seed: int = 0,
    overwrite: bool = False,
    device: str | torch.device = "auto",
    progress: Callable[[float], None] | None = None,
) -> dict:
    """Adapt ``model`` (a shipped name or a checkpoint) to ``cases`` and write the adapted model
    checkpoint to ``out`` (atomically; an existing file is refused without ``overwrite``). Returns its
    ``adapted_batch_norm`` record plus ``model_id``."""
    from .checkpoint import (
        load_checkpoint,
        load_model,
        model_id,
        now_iso,
        resolve_model_path,
        save_checkpoint,
        state_dict_for_export,
    )

    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: exists; pass --overwrite to replace it")
    path = resolve_model_path(model)
    net, meta = load_model(path)
    ckpt = load_checkpoint(path)
    adapt_batch_norm(net, meta, cases, batches=batches, seed=seed, device=device, progress=progress)
    net.cpu()
    dtype = "float16" if any(v.dtype == torch.float16 for v in ckpt["state_dict"].values()) else "float32"
    state = state_dict_for_export(net, dtype)
    record = {
        "from_model_id": meta.model_id,
        "cases": [c.name for c in cases],
        "batches": int(batches),
        "batch_size": ADAPT_BATCH_SIZE,
        "seed": int(seed),
        "quality_measured_before": meta.quality is not None,
    }
    payload = {
        **ckpt,
        "state_dict": state,
        "model_id": model_id(state),
        "created": now_iso(),
        "adapted_batch_norm": record,
    }
    payload.pop("format", None)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, payload)
    return {**record, "model_id": payload["model_id"]}
