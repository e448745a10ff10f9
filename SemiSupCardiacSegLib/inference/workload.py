"""Memory and time predicted before any work, and the out-of-memory fallback.

* memory: ``available_memory_bytes`` (host or container cgroup, the smaller) against
  ``estimate_inference_bytes``; ``check_memory`` refuses, naming the numbers.
* workload: ``plan_workload`` computes the model grid and its windows from the geometry alone;
  ``check_workload`` refuses (or with ``allow_large`` warns about) a model grid far larger than
  the input, with a time estimate from one measured window (``time_one_window``).
* ``run_with_oom_fallback``: CUDA out of memory -> half the window batch, then the CPU.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import numpy as np
import torch

from ..errors import InputError
from ..memory import available_memory_bytes
from ..volume import Volume, canonical_reorientation
from .window import window_grid

T = TypeVar("T")


def estimate_inference_bytes(input_shape: Sequence[int], model_shape: Sequence[int], num_classes: int) -> int:
    """Peak host memory of ``Predictor.predict`` (float32), from the array sizes it allocates.

    Model grid: image + accumulators for K probabilities, K-1 SDMs, entropy and weights (x2 for
    a flipped copy under TTA). Input grid: K probabilities (and a copy while normalising), K-1
    SDMs, entropy, MI, labels; plus 10 % and a fixed 600 MiB for the torch runtime, the model and
    temporaries, calibrated on the measured peak of a 576 x 576 x 88 LA volume
    (benchmarks/inference_speed.py: 1.8 GB measured, 1.8 GB estimated).
    """
    k = int(num_classes)
    n_model = int(np.prod(model_shape))
    n_input = int(np.prod(input_shape))
    arrays = 4 * (n_model * 2 * (1 + k + (k - 1) + 2) + n_input * (2 * k + (k - 1) + 3))
    return int(1.1 * arrays) + 600 * 2**20


def check_memory(
    input_shape: Sequence[int], model_shape: Sequence[int], num_classes: int, available: int | None = None
) -> None:
    """Refuse, naming the numbers, a volume whose inference would not fit in available memory."""
    need = estimate_inference_bytes(input_shape, model_shape, num_classes)
    available = available_memory_bytes() if available is None else available
    if available is not None and need > available:
        raise InputError(
            f"volume too large for available memory: segmenting {tuple(input_shape)} voxels needs about "
            f"{need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available; crop it or resample it first"
        )


#: A model grid with more than this many times the input's voxels is "far larger than the input"
#: (a 5 mm localizer resampled to the LA model's 0.625 mm grid has 512 times the voxels) ...
LARGE_GRID_FACTOR = 8.0
#: ... and then needs ``allow_large`` when it takes more than this many windows.
LARGE_GRID_WINDOWS = 64


@dataclass
class Workload:
    """What a ``Predictor.predict`` call will run, planned before any work (``plan_workload``)."""

    input_shape: tuple[int, ...]
    model_shape: tuple[int, ...]
    windows: int  # sliding windows per pass set
    pass_sets: int  # TTA flips/rotations: each runs every window
    decoder_passes: int  # per window, summed over pass sets (max(MC samples, pass sets))

    @property
    def grid_factor(self) -> float:
        """Model-grid voxels per input voxel."""
        return float(np.prod(self.model_shape)) / max(1.0, float(np.prod(self.input_shape)))

    @property
    def is_large(self) -> bool:
        return self.grid_factor > LARGE_GRID_FACTOR and self.windows * self.pass_sets > LARGE_GRID_WINDOWS


def plan_workload(volume: Volume, prep, patch_size, overlap, mc_samples: int, pass_sets: int = 1) -> Workload:
    """The model grid ``to_model_space`` will make of ``volume`` and the windows it takes (no voxel
    is touched: cheap whatever the volume)."""
    if prep.reorient:
        perm = list(canonical_reorientation(volume.direction).perm)
    else:
        perm = [0, 1, 2]
    shape = tuple(int(volume.shape[p]) for p in perm)
    spacing = np.asarray(volume.spacing, float)[perm]
    model_spacing = prep.model_spacing(shape, spacing)
    model_shape = tuple(max(1, int(round(n * s / m))) for n, s, m in zip(shape, spacing, model_spacing))
    windows = len(window_grid(model_shape, tuple(int(p) for p in patch_size), overlap))
    return Workload(
        tuple(int(n) for n in volume.shape), model_shape, windows, int(pass_sets), max(int(mc_samples), int(pass_sets))
    )


def time_one_window(model: torch.nn.Module, patch_size, device) -> tuple[float, float]:
    """Seconds of one encoder and one decoder pass on one window (a measured probe, ~ one window's work)."""
    was_training = model.training
    model.eval()
    try:
        channels = next((m.in_channels for m in model.modules() if hasattr(m, "in_channels")), 1)
        x = torch.zeros((1, int(channels)) + tuple(int(p) for p in patch_size), device=device)
        with torch.no_grad():
            t0 = time.perf_counter()
            feats = model.encode(x)
            t1 = time.perf_counter()
            model.decode(feats)
            t2 = time.perf_counter()
    finally:
        model.train(was_training)
    return t1 - t0, t2 - t1


def estimated_seconds(work: Workload, encode_s: float, decode_s: float) -> float:
    """Network time of ``work``: every window encoded once per pass set, decoded once per pass."""
    return work.windows * (work.pass_sets * encode_s + work.decoder_passes * decode_s)


def check_workload(
    work: Workload, allow_large: bool = False, probe: Callable[[], tuple[float, float]] | None = None
) -> float | None:
    """Refuse (InputError), or with ``allow_large`` warn on stderr, when the model grid is far larger
    than the input (``Workload.is_large``), naming the windows and the estimated time (from
    ``probe()``: encoder and decoder seconds of one window). Returns the estimate, or None when the
    workload is not large (no probe is run then)."""
    if not work.is_large:
        return None
    seconds = estimated_seconds(work, *probe()) if probe is not None else None
    when = f", about {_duration(seconds)}" if seconds is not None else ""
    text = (
        f"the model grid {' x '.join(map(str, work.model_shape))} has {work.grid_factor:.0f} times the voxels of the "
        f"input {' x '.join(map(str, work.input_shape))} (a coarse volume upsampled to the model's spacing): "
        f"{work.windows * work.pass_sets} windows{when}"
    )
    if not allow_large:
        raise InputError(f"{text}; pass --allow-large to run it anyway, or give a volume nearer the model's spacing")
    print(f"warning: {text}", file=sys.stderr, flush=True)
    return seconds


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_with_oom_fallback(
    run: Callable[[int, torch.device], T], window_batch: int, device: torch.device
) -> tuple[T, torch.device]:
    """``run(window_batch, device)``; on CUDA out-of-memory retry with half the window batch (down to
    1), then on the CPU, each time with a warning. Returns (result, the device that produced it)."""
    batch = max(1, int(window_batch))
    while True:
        try:
            return run(batch, device), device
        except torch.cuda.OutOfMemoryError:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch > 1:
                batch //= 2
                warnings.warn(
                    f"out of GPU memory: retrying with a window batch of {batch}", RuntimeWarning, stacklevel=2
                )
            elif device.type != "cpu":
                device = torch.device("cpu")
                warnings.warn(
                    "out of GPU memory with a window batch of 1: falling back to the CPU", RuntimeWarning, stacklevel=2
                )
            else:
                raise
