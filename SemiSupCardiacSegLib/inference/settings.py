"""Inference settings: one frozen, validated object instead of keyword arguments passed down."""

from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass
from typing import Sequence

import torch

from ..cli import MAX_MC_SAMPLES  # the CLI's range, defined there torch-free
from ..errors import InputError
from ..model_meta import MC_SCOPES, ROT90_PLANE, ModelMeta, check_tta

#: ``InferenceSettings.precision`` values.
PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU raises a clear error."""
    device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(device)


def flip_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """All subsets of ``axes`` (the flip group they generate), identity first: (0, 1) -> (), (0,), (1,), (0, 1)."""
    axes = tuple(sorted(set(int(a) for a in axes)))
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


@dataclass(frozen=True)
class InferenceSettings:
    """How to run a model on an image; checked once, here.

    patch_size: window (X, Y, Z) voxels. overlap: fraction of the window shared by neighbours
    (stride = patch x (1 - overlap)), in [0, 1), one value or one per axis. mc_samples: MC-dropout
    samples N in 1..1000 (1 = deterministic, dropout off). mc_scope: "decoder" or "head"
    (``model_space.predict_model_space``). flip_axes: model-space axes of flip TTA; rot90: the 8
    in-plane rotations/flips instead (they hold every flip of axes 0 and 1: rot90 supersedes those;
    a flip of axis 2 with rot90 is refused). window_batch: windows per network call (>= 1).
    device: "auto", "cpu", "cuda[:N]". seed: MC-dropout masks drawn from torch's RNG seeded with
    it (None: the current global state). allow_large: run a model grid far larger than the input
    (``workload.check_workload``). postprocess: keep the largest component per class
    (``postprocess.labels_from_probs``). localize: on a large field of view, a 3D model first finds
    the structure with a cheap coarse pass and runs the full pass on a crop around it
    (``localize``); False: always the whole volume. precision: the network's arithmetic, "float32",
    "bfloat16" or "float16" (torch autocast; probabilities are accumulated in float32), "auto":
    float16 on CUDA (with channels-last 3D tensors), float32 on the CPU. deterministic_mask: with
    N > 1, the probabilities (so the mask) and SDM from one dropout-off pass per TTA transform and
    only the entropy and MI from the MC samples (F more passes; a checkpoint's choice).
    """

    patch_size: tuple[int, int, int]
    overlap: float | tuple[float, float, float] = 0.5
    mc_samples: int = 1
    mc_scope: str = "decoder"
    flip_axes: tuple[int, ...] = ()
    rot90: bool = False
    window_batch: int = 2
    device: str = "auto"
    seed: int | None = 0
    allow_large: bool = False
    postprocess: bool = True
    localize: bool = True
    precision: str = "auto"
    deterministic_mask: bool = False

    def __post_init__(self) -> None:
        try:
            patch = tuple(operator.index(p) for p in self.patch_size)
        except TypeError:
            patch = ()
        if len(patch) != 3 or min(patch) < 1:
            raise InputError(f"patch_size must be three integers >= 1, got {self.patch_size!r}")
        object.__setattr__(self, "patch_size", patch)
        overlaps = list(self.overlap) if isinstance(self.overlap, (list, tuple)) else [self.overlap]
        if len(overlaps) not in (1, 3) or not all(
            isinstance(o, (int, float)) and math.isfinite(o) and 0.0 <= o < 1.0 for o in overlaps
        ):
            raise InputError(f"overlap must be in [0, 1) (one value or one per axis), got {self.overlap!r}")
        if isinstance(self.overlap, list):
            object.__setattr__(self, "overlap", tuple(self.overlap))
        n = self.mc_samples
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_MC_SAMPLES:
            raise InputError(f"mc_samples must be an integer in [1, {MAX_MC_SAMPLES}], got {n!r}")
        if self.mc_scope not in MC_SCOPES:
            raise InputError(f"mc_scope must be one of {MC_SCOPES}, got '{self.mc_scope}'")
        object.__setattr__(self, "flip_axes", check_tta(self.flip_axes, bool(self.rot90), "inference settings"))
        if not isinstance(self.window_batch, int) or self.window_batch < 1:
            raise InputError(f"window_batch must be an integer >= 1, got {self.window_batch!r}")
        object.__setattr__(self, "device", str(self.device))
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.seed is not None and not isinstance(self.seed, int):
            raise InputError(f"seed must be an integer or None, got {self.seed!r}")
        if not isinstance(self.deterministic_mask, bool):
            raise InputError(f"deterministic_mask must be true or false, got {self.deterministic_mask!r}")

    @classmethod
    def from_meta(
        cls, meta: ModelMeta, tta: bool = True, mc_samples: int = 10, mc_scope: str | None = None, **overrides
    ) -> "InferenceSettings":
        """The settings a checkpoint fixes (patch size, flip or rotation TTA unless ``tta`` is False,
        MC scope unless ``mc_scope`` is given, deterministic masks) with the caller's: ``mc_samples`` (default 10, as
        ``segment``) and ``overrides`` (overlap, device, window_batch, seed, allow_large, postprocess,
        localize, precision)."""
        return cls(
            patch_size=meta.patch_size,
            mc_samples=mc_samples,
            mc_scope=meta.inference.mc_scope if mc_scope is None else mc_scope,
            flip_axes=meta.inference.tta_flip_axes if tta else (),
            rot90=bool(tta and meta.inference.tta_rot90),
            **{"deterministic_mask": meta.inference.deterministic_mask, **overrides},
        )

    def compute_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype the network computes in on ``device`` (``precision``)."""
        if self.precision == "auto":
            return torch.float16 if device.type == "cuda" else torch.float32
        return getattr(torch, self.precision)

    @property
    def dropout(self) -> bool:
        """MC dropout on: exactly when more than one sample is drawn."""
        return self.mc_samples > 1

    @property
    def separate_mask_passes(self) -> bool:
        """Dropout-off passes for the mask beside the MC samples: ``deterministic_mask`` with N > 1
        (with N = 1 the one pass is already dropout-off)."""
        return self.deterministic_mask and self.dropout

    def tta_transforms(self) -> list[tuple[int, tuple[int, ...]]]:
        """The TTA passes as (k, axes): the image is ``flip(rot90(x, k, plane (0, 1)), axes)``.
        rot90: the 8 symmetries of the square (k = 0..3, without and with a flip of axis 0); else
        the flip group of ``flip_axes``; identity first."""
        if self.rot90:
            return [(k, axes) for axes in ((), (ROT90_PLANE[0],)) for k in range(4)]
        return [(0, axes) for axes in flip_sets(self.flip_axes)]

    def report(self) -> dict:
        """What report.json records of these settings (``timings_s``, beside the seconds)."""
        return {
            "mc_samples": int(self.mc_samples),
            "tta_flip_axes": list(self.flip_axes),
            "tta_rot90": bool(self.rot90),
            "mc_scope": self.mc_scope,
            "localize": bool(self.localize),
            "precision": self.precision,
            "deterministic_mask": self.separate_mask_passes,
        }
