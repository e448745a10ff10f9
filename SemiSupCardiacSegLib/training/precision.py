"""The arithmetic of a training step: float32, or bfloat16 autocast where the hardware has bf16 units.

Config key ``precision``: ``"float32"``, ``"bfloat16"`` or ``"auto"`` (the default). ``"auto"`` is
bfloat16 on a CPU with AMX tiles (Intel Sapphire Rapids and later: oneDNN runs bf16 convolutions
on them) and on a CUDA GPU that supports bf16 (compute capability >= 8.0), float32 anywhere else.
Under bf16 only the networks' convolutions and matrix products run in bfloat16 (``torch.autocast``);
every network returns float32 outputs (``networks``), so the methods' transforms (SDM -> mask,
softmax, uncertainty) and every loss are computed in float32, and the weights, their gradients and
the optimizer state stay float32 (bf16 has float32's exponent range: no loss scaling is needed).
Measured side by side on this project's 2-core CPU (``benchmarks/train_speed.py``): see
docs/benchmarks.md; accuracy with and without: ``benchmarks/method_comparison.py`` rows.
"""

from __future__ import annotations

import contextlib

import torch

from ..config_check import TRAINING_PRECISIONS as PRECISIONS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def cpu_has_bf16_units() -> bool:
    """True when this CPU has AMX tiles (torch's own probe; False where torch cannot tell)."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except Exception:  # a probe that fails says nothing: stay with float32
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``precision`` ("auto", "float32", "bfloat16") on ``device`` -> "float32" or "bfloat16"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        return "bfloat16" if cpu_has_bf16_units() else "float32"
    return "float32"


def step_autocast(precision: str, device: torch.device):
    """The context a training step's forward passes and losses run in (``precision`` resolved)."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])
