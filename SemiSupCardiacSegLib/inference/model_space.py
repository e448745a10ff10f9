"""A network with MC dropout and test-time augmentation over a model-space image.

MC dropout (``mc_samples`` = N >= 1): per window, the encoder runs once and the decoder (which
holds every dropout layer) N times with dropout on (``networks.set_mc_dropout``), one sample at a
time. (Spreading the N samples over overlapping windows does not keep N: the Gaussian window
weights (sigma = 1/8) leave each voxel dominated by its nearest window.) Per window the samples'
mean probability, expected entropy and mean SDM (``uncertainty.UncertaintyAccumulator``) are
blended across windows (``window.sliding_window``); then predictive entropy H(p_bar) and
MI = H(p_bar) - E_H. With N = 1 dropout stays off: a deterministic pass whose entropy is that of
the single softmax and MI = 0.

TTA: the ensemble is the set of (transform, dropout mask) passes: F transforms of the image
(``InferenceSettings.tta_transforms``: flips, or the 8 in-plane rotations/flips), and max(N, F)
passes shared out over them as evenly as possible (so TTA costs no extra decoder passes once
N >= F); dropout is on when N > 1. Outputs are mapped back and combined by the same accumulator,
each transform weighted by its pass count (with transforms only, MI measures their disagreement).

Deterministic masks (``InferenceSettings.deterministic_mask``, a checkpoint's choice): the mean of
N dropout samples is not always the better segmentation (the shipped cine network, with dropout
after every block, loses 0.014 mean Dice to its dropout-off passes on frames whose labels no stage
read); then the probabilities and SDM come from one dropout-off pass per transform and the N
samples give only the entropy and MI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..errors import InputError
from ..model_meta import MC_SCOPES
from ..networks import set_mc_dropout
from .settings import InferenceSettings, resolve_device
from .uncertainty import UncertaintyAccumulator, predictive_uncertainty
from .window import WindowFn, sliding_window


@dataclass
class ModelSpaceOutput:
    """Outputs on the model grid. probs: (K, X, Y, Z); sdm: (K-1, X, Y, Z) or None;
    entropy (H(p_bar)), mutual_info: (X, Y, Z) in nats."""

    probs: np.ndarray
    sdm: np.ndarray | None
    entropy: np.ndarray
    mutual_info: np.ndarray

    @property
    def expected_entropy(self) -> np.ndarray:
        """E_H = H(p_bar) - MI (nats)."""
        return self.entropy - self.mutual_info


def check_mc_scope(model: torch.nn.Module, mc_scope: str) -> None:
    """InputError (a ValueError) unless ``mc_scope`` is one of MC_SCOPES and ``model`` supports it."""
    if mc_scope not in MC_SCOPES:
        raise InputError(f"mc_scope must be one of {MC_SCOPES}, got '{mc_scope}'")
    if mc_scope == "head" and not (hasattr(model, "decode_trunk") and hasattr(model, "decode_heads")):
        raise InputError(
            f"head-only MC dropout needs a network with decode_trunk/decode_heads (V-Net); "
            f"{type(model).__name__} has none: use mc_scope 'decoder'"
        )


def mc_window_fn(model: torch.nn.Module, samples: int, mc_scope: str, dropout: bool) -> WindowFn:
    """The window function of ``model`` (with ``encode``/``decode``) drawing ``samples`` decoder passes
    (dropout as set by the caller) -> {"probs"[, "expected_entropy"][, "sdm"]}, the samples' means
    (E_H only with dropout: a deterministic pass's MI is 0).

    mc_scope: which dropout layers are sampled. "decoder" (the training posterior): every dropout
    after the encoder, so each sample re-runs the decoder. "head": only the last dropout before the
    1x1 heads, for networks with ``decode_trunk``/``decode_heads`` (V-Net): the decoder runs once
    with dropout off and each sample costs a dropout and the heads - near the price of one pass, at
    the cost of an approximate posterior (its uncertainty quality is measured in the benchmarks).
    """

    def run(x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = model.encode(x)
        decode = model.decode
        if dropout and mc_scope == "head":
            set_mc_dropout(model, False)
            feats = model.decode_trunk(feats)
            set_mc_dropout(model, True)
            decode = model.decode_heads
        acc = UncertaintyAccumulator()
        for _ in range(max(1, samples)):
            out = decode(feats)
            sdm = out.get("sdm")
            acc.add(
                torch.softmax(out["seg"].float(), dim=1), None if sdm is None else sdm.float(), with_entropy=dropout
            )
        return acc.mean()

    return run


@torch.inference_mode()
def _one_transform(
    model: torch.nn.Module,
    image: np.ndarray,
    settings: InferenceSettings,
    samples: int,
    dropout: bool,
    progress: Callable[[float], None] | None,
) -> ModelSpaceOutput:
    """``samples`` MC passes of one (already transformed) image, blended over the windows."""
    device = resolve_device(settings.device)
    dtype = settings.compute_dtype(device)
    was_training = model.training
    model.eval()
    set_mc_dropout(model, dropout)
    window_fn = mc_window_fn(model, samples, settings.mc_scope, dropout)
    if device.type == "cuda" and any(isinstance(m, torch.nn.Conv3d) for m in model.modules()):
        model.to(memory_format=torch.channels_last_3d)  # cuDNN's fast layout for 3D convolutions

        def fn(x: torch.Tensor, inner=window_fn) -> dict[str, torch.Tensor]:
            return inner(x.contiguous(memory_format=torch.channels_last_3d))

        window_fn = fn
    try:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            maps = sliding_window(
                window_fn, image, settings.patch_size, settings.overlap, settings.window_batch, device, progress
            )
    finally:
        set_mc_dropout(model, False)
        model.train(was_training)
    probs = maps["probs"].astype(np.float32)
    pred_h, mi = predictive_uncertainty(probs, maps.get("expected_entropy"), epistemic=dropout)
    return ModelSpaceOutput(probs, maps.get("sdm"), pred_h, mi)


def _undo(a: np.ndarray, k: int, axes: tuple, channels: bool) -> np.ndarray:
    """Inverse of x -> flip(rot90(x, k), axes) on an output (channel axis first when ``channels``)."""
    c = 1 if channels else 0
    return np.rot90(np.flip(a, tuple(x + c for x in axes)), -k, axes=(c, c + 1))


def predict_model_space(
    model: torch.nn.Module,
    image: np.ndarray,
    settings: InferenceSettings,
    progress: Callable[[float], None] | None = None,
) -> ModelSpaceOutput:
    """Sliding window with MC dropout and TTA (see the module docstring) over a model-space image
    (X, Y, Z) -> ``ModelSpaceOutput`` on the same grid. Use transforms the network was trained to be
    invariant to (``data.transforms``: flips of axes 0 and 1, or rot90 for ``random_rot_flip``).
    With ``settings.deterministic_mask`` and N > 1 the probabilities and SDM come from one
    dropout-off pass per TTA transform (what N = 1 gives) and only the entropy and MI from the N
    MC samples: F more passes. The model-space entry point of training's validation; ``Predictor``
    wraps it for input grids."""
    check_mc_scope(model, settings.mc_scope)
    n_tf = len(settings.tta_transforms())
    mc_passes = max(settings.mc_samples, n_tf)
    det_passes = n_tf if settings.separate_mask_passes else 0
    split = mc_passes / (mc_passes + det_passes)

    def part(lo: float, width: float) -> Callable[[float], None] | None:
        return None if progress is None else (lambda frac: progress(lo + width * frac))

    mc = _ensemble(model, image, settings, settings.mc_samples, settings.dropout, part(0.0, split))
    if not det_passes:
        return mc
    det = _ensemble(model, image, settings, 1, False, part(split, 1.0 - split))
    return ModelSpaceOutput(det.probs, det.sdm, mc.entropy, mc.mutual_info)


def _ensemble(
    model: torch.nn.Module,
    image: np.ndarray,
    settings: InferenceSettings,
    samples: int,
    dropout: bool,
    progress: Callable[[float], None] | None,
) -> ModelSpaceOutput:
    """max(``samples``, F) passes (dropout on or off) shared out over the F TTA transforms, combined."""
    transforms = settings.tta_transforms()
    if len(transforms) == 1:
        return _one_transform(model, image, settings, samples, dropout, progress)
    total = max(samples, len(transforms))
    counts = [total // len(transforms) + (1 if i < total % len(transforms) else 0) for i in range(len(transforms))]
    acc = UncertaintyAccumulator()
    for f, ((k, axes), n) in enumerate(zip(transforms, counts)):

        def sub_progress(frac: float, f=f) -> None:
            if progress is not None:
                progress((f + frac) / len(transforms))

        x = np.ascontiguousarray(np.flip(np.rot90(image, k, axes=(0, 1)), axes))
        out = _one_transform(model, x, settings, n, dropout, sub_progress)
        acc.add(
            _undo(out.probs, k, axes, True),
            None if out.sdm is None else _undo(out.sdm, k, axes, True),
            expected_entropy=_undo(out.expected_entropy, k, axes, False),  # this transform's E_t[H(p_t)]
            weight=n / total,
        )
    mean = acc.mean()
    pred_h, mi = predictive_uncertainty(mean["probs"], mean["expected_entropy"])
    sdm = mean.get("sdm")
    return ModelSpaceOutput(
        np.ascontiguousarray(mean["probs"], dtype=np.float32),
        None if sdm is None else np.ascontiguousarray(sdm, dtype=np.float32),
        pred_h,
        mi,
    )
