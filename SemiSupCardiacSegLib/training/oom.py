"""After a CUDA out-of-memory training step: the largest batch whose step fits, by halving, and the message."""

from __future__ import annotations

from typing import Mapping

import torch

from ..methods import Method
from .precision import step_autocast


def _sub_batch(batch: dict, size: int) -> dict:
    """``size`` rows of ``batch`` keeping its labeled share (at least one labeled row), labeled rows first."""
    n_total, n_lab = int(batch["image"].shape[0]), int(batch["n_labeled"])
    lab = max(1, round(n_lab * size / n_total)) if n_lab < n_total else size
    rows = list(range(min(lab, n_lab))) + list(range(n_lab, n_lab + size - min(lab, n_lab)))
    sub = {k: (v[rows] if torch.is_tensor(v) and v.shape[:1] == (n_total,) else v) for k, v in batch.items()}
    sub["n_labeled"] = min(lab, n_lab)
    return sub


def largest_fitting_batch(
    method: Method,
    optimizers: Mapping[str, torch.optim.Optimizer],
    batch: dict,
    iteration: int,
    device: torch.device,
    precision: str = "float32",
) -> int:
    """The largest of batch_size / 2, / 4, ... 1 rows whose forward and backward (no optimizer step) fit in
    memory; 0 when none does. Gradients are left zeroed."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    size = int(batch["image"].shape[0]) // 2
    while size >= 1:
        try:
            with step_autocast(precision, device):
                out = method.step_losses(_sub_batch(batch, size), iteration)
            for step in out.steps:
                step.loss.backward(retain_graph=True)
            return size
        except torch.cuda.OutOfMemoryError:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            size //= 2
        finally:
            for opt in optimizers.values():
                opt.zero_grad(set_to_none=True)
    return 0


def out_of_memory_message(config: dict, batch: dict, iteration: int, fits: int, saved: bool) -> str:
    """The error of an out-of-memory step at (0-based) ``iteration``: the batch size that fits (``fits``,
    0 = none) and whether ``last.pt`` was saved."""
    n_total, n_lab = int(batch["image"].shape[0]), int(batch["n_labeled"])
    lpb = max(1, min(fits, round(n_lab * fits / n_total)))
    hint = (
        f"a batch of {fits} fits: set batch_size {fits} and labeled_per_batch {lpb}"
        if fits
        else "not even a batch of 1 fits: use smaller patch_size or n_filters, or --device cpu"
    )
    return (
        f"out of GPU memory at iteration {iteration + 1} with batch_size {config['batch_size']} "
        f"(patch {list(config['patch_size'])}); {hint}" + (" (last.pt saved)" if saved else "")
    )
