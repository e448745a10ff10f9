"""Sliding-window inference with Monte-Carlo dropout, in model space, and the full segment path.

Sliding window: windows of ``patch_size`` voxels at stride ``patch * (1 - overlap)`` cover the
(padded) volume; each window's outputs are weighted by a Gaussian importance map (sigma = 1/8 of
the window, nnU-Net) and the weighted sums are divided by the summed weights. Windows are run in
batches of ``window_batch``; accumulators live on the CPU in float32, so memory is bounded by
(classes + SDM channels + 2) x voxels x 4 bytes plus one window batch on the device.

MC dropout (``mc_samples`` = N >= 1): per window, the encoder runs once and the decoder (which
holds every dropout layer) N times with dropout on (``networks.set_mc_dropout``), one sample at a
time or ``mc_chunk`` samples as one batch. (Spreading the N samples over overlapping windows does
not keep N: the Gaussian window weights (sigma = 1/8) leave each voxel dominated by its nearest
window.) We accumulate:
* mean probability  p_bar = 1/N sum_t p_t                      (blended across windows)
* expected entropy  E_H   = 1/N sum_t H(p_t)                    (blended across windows)
* mean SDM          1/N sum_t s_t
Then predictive entropy H(p_bar) = -sum_k p_bar_k log p_bar_k (nats) and mutual information
MI = H(p_bar) - E_H (the epistemic part). With N = 1 dropout stays off: a deterministic pass
whose entropy is that of the single softmax and MI = 0.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import ndimage

from .networks import set_mc_dropout
from .preprocessing import to_model_space
from .volume import Volume

#: MC samples decoded per batch by default (``sliding_window_predict``'s ``mc_chunk``).
MC_CHUNK = 1
#: Samples every window takes before ``mc_gate`` may stop its MC (two, so that the gate sees
#: whether samples agree, not only whether each one is sure of itself).
MC_GATE_SAMPLES = 2


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU raises a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is available; use --device cpu or auto")
    return torch.device(device)


def gaussian_importance(patch: tuple[int, ...], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """Separable Gaussian weight map (X, Y, Z), max 1, min clipped to 1e-3 (no zero weights)."""
    axes = [np.exp(-0.5 * ((np.arange(p) - (p - 1) / 2) / (p * sigma_scale)) ** 2) for p in patch]
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    w = w / w.max()
    return np.maximum(w, 1e-3).astype(np.float32)


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start indices covering [0, size) with windows of ``patch`` (size >= patch), last one flush."""
    if size <= patch:
        return [0]
    n = math.ceil((size - patch) / stride) + 1
    return sorted({min(i * stride, size - patch) for i in range(n)})


def window_grid(
    shape: Sequence[int], patch: Sequence[int], overlap: float | Sequence[float]
) -> list[tuple[int, int, int]]:
    """The window start corners ``sliding_window_predict`` runs on an image of ``shape`` (already padded
    to at least ``patch`` along every axis; a smaller axis counts as padded)."""
    patch = [int(p) for p in patch]
    overlaps = [float(o) for o in overlap] if isinstance(overlap, (list, tuple)) else [float(overlap)] * 3
    stride = [max(1, int(round(p * (1.0 - o)))) for p, o in zip(patch, overlaps)]
    axes = [window_starts(max(int(n), p), p, st) for n, p, st in zip(shape, patch, stride)]
    return [(x, y, z) for x in axes[0] for y in axes[1] for z in axes[2]]


def entropy(p: np.ndarray, axis: int = 0) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (0 log 0 = 0)."""
    p = np.clip(p, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=axis)


@dataclass
class ModelSpaceOutput:
    """Outputs on the model grid. probs: (K, X, Y, Z); sdm: (K-1, X, Y, Z) or None;
    entropy, mutual_info: (X, Y, Z) in nats."""

    probs: np.ndarray
    sdm: np.ndarray | None
    entropy: np.ndarray
    mutual_info: np.ndarray
    mc_window_share: float = 1.0  # share of windows given all MC samples (below 1 with ``mc_gate``)


@torch.inference_mode()
def sliding_window_predict(
    model: torch.nn.Module,
    image: np.ndarray,
    patch_size: tuple[int, int, int],
    overlap: float | Sequence[float] = 0.5,
    mc_samples: int = 1,
    window_batch: int = 2,
    device: torch.device | str = "cpu",
    progress: Callable[[float], None] | None = None,
    dropout: bool | None = None,
    mc_chunk: int = MC_CHUNK,
    mc_scope: str = "decoder",
    mc_gate: float = 0.0,
) -> ModelSpaceOutput:
    """Run ``model`` (with ``encode``/``decode``) over a model-space image (X, Y, Z).

    overlap: fraction of the window shared by neighbours (stride = patch x (1 - overlap)), one value
    or one per axis.
    dropout: MC dropout on or off; None = on exactly when ``mc_samples`` > 1.
    mc_chunk: MC samples decoded together, as one batch of ``mc_chunk x window_batch`` (the encoder
    features repeated); each sample still draws its own dropout masks. 1 decodes them one by one.
    mc_scope: which dropout layers are sampled. "decoder" (the training posterior): every dropout
    after the encoder, so each sample re-runs the decoder. "head": only the last dropout before the
    1x1 heads, for networks with ``decode_trunk``/``decode_heads`` (V-Net): the decoder runs once
    with dropout off and each sample costs a dropout and the heads - near the price of one pass, at
    the cost of an approximate posterior (its uncertainty quality is measured in the benchmarks).
    mc_gate: early stop of MC per window (0 = off). After the first ``MC_GATE_SAMPLES`` samples, a
    window where every one of them gives every voxel the same label with a top-class probability
    >= 1 - mc_gate keeps those samples alone (its MI is then ~0: they agree and are sure
    everywhere); the other windows get all N. Surely-empty windows then cost the encoder and two
    decoder passes instead of N; where every window holds something unsure nothing is saved (nor
    lost). Measured (inference_speed): the shipped LA model is unsure somewhere in nearly every
    window of a 576 x 576 x 88 phantom, so there it saves nothing; off by default. The sampled
    share is ``ModelSpaceOutput.mc_window_share``.
    """
    check_mc_scope(model, mc_scope)
    if not 0.0 <= float(mc_gate) < 1.0:
        from .errors import InputError

        raise InputError(f"mc_gate must be in [0, 1), got {mc_gate}")
    device = torch.device(device)
    patch = tuple(int(p) for p in patch_size)
    orig_shape = image.shape
    pads = [(max(0, p - n) // 2, max(0, p - n) - max(0, p - n) // 2) for n, p in zip(orig_shape, patch)]
    img = np.pad(image, pads, mode="constant") if any(a or b for a, b in pads) else image
    shape = img.shape
    starts = window_grid(shape, patch, overlap)
    weight = gaussian_importance(patch)
    weight_t = torch.from_numpy(weight).to(device)
    was_training = model.training
    model.eval()
    mc = mc_samples > 1 if dropout is None else bool(dropout)
    set_mc_dropout(model, mc)
    k = None
    acc_p = acc_h = acc_s = None
    acc_w = np.zeros(shape, np.float32)
    sampled = windows = 0  # windows given all N samples / windows run
    try:
        for b0 in range(0, len(starts), window_batch):
            chunk = starts[b0 : b0 + window_batch]
            x = torch.from_numpy(
                np.stack([img[sx : sx + patch[0], sy : sy + patch[1], sz : sz + patch[2]] for sx, sy, sz in chunk])
            )
            x = x[:, None].to(device=device, dtype=torch.float32)
            feats = model.encode(x)
            decode = model.decode
            if mc and mc_scope == "head":
                set_mc_dropout(model, False)
                feats = model.decode_trunk(feats)
                set_mc_dropout(model, True)
                decode = model.decode_heads
            nb = x.shape[0]
            n = max(1, mc_samples)
            chunk_size = max(1, int(mc_chunk)) if _tensors_only(feats) else 1
            p_sum = h_sum = s_sum = None
            taken = torch.zeros(nb, device=device)  # samples summed per window
            gating = bool(mc and mc_gate and n > MC_GATE_SAMPLES)
            unsure = torch.zeros(nb, dtype=torch.bool, device=device)  # the gate's verdict so far
            first_labels = None
            active = None  # windows still sampled (None: all of them)
            left = n
            while left > 0:
                m = min(left, chunk_size)
                left -= m
                sub = feats if active is None else _select_windows(model, feats, x, active)
                rows = nb if active is None else len(active)
                out = decode(_repeat_batch(sub, m) if m > 1 else sub)
                p = torch.softmax(out["seg"].float(), dim=1)
                h = -(p.clamp_min(1e-12).log() * p).sum(1)
                s = out.get("sdm")
                # rows are sample-major: (m * rows, ...) -> sum over the m samples
                p_all = p.reshape((m, rows) + p.shape[1:])
                p, h = p_all.sum(0), h.reshape((m, rows) + h.shape[1:]).sum(0)
                if s is not None:
                    s = s.float().reshape((m, rows) + s.shape[1:]).sum(0)
                if active is None:  # every window (so far) takes every sample
                    p_sum = p if p_sum is None else p_sum + p
                    h_sum = h if h_sum is None else h_sum + h
                    if s is not None:
                        s_sum = s if s_sum is None else s_sum + s
                    taken += m
                    if gating:
                        top, labels = p_all.max(dim=2)  # (m, nb, X, Y, Z)
                        first_labels = labels[0] if first_labels is None else first_labels
                        sure = (top >= 1.0 - mc_gate) & (labels == first_labels)
                        unsure |= ~sure.flatten(2).all(-1).all(0)
                        if taken[0] >= MC_GATE_SAMPLES and left > 0:
                            active = torch.nonzero(unsure).flatten()
                else:
                    p_sum[active] += p
                    h_sum[active] += h
                    if s is not None:
                        s_sum[active] += s
                    taken[active] += m
                if active is not None and len(active) == 0:
                    break
            sampled += int((taken >= n).sum())
            windows += nb
            norm = taken.view((nb,) + (1,) * (p_sum.dim() - 1))
            p_w = (p_sum / norm * weight_t).cpu().numpy()
            h_w = (h_sum / norm[:, 0] * weight_t).cpu().numpy()
            s_w = (s_sum / norm * weight_t).cpu().numpy() if s_sum is not None else None
            if acc_p is None:
                k = p_w.shape[1]
                acc_p = np.zeros((k,) + shape, np.float32)
                acc_h = np.zeros(shape, np.float32)
                acc_s = np.zeros((s_w.shape[1],) + shape, np.float32) if s_w is not None else None
            for i, (sx, sy, sz) in enumerate(chunk):
                sl = (slice(sx, sx + patch[0]), slice(sy, sy + patch[1]), slice(sz, sz + patch[2]))
                acc_p[(slice(None),) + sl] += p_w[i]
                acc_h[sl] += h_w[i]
                if acc_s is not None:
                    acc_s[(slice(None),) + sl] += s_w[i]
                acc_w[sl] += weight
            if progress is not None:
                progress(min(1.0, (b0 + len(chunk)) / len(starts)))
    finally:
        set_mc_dropout(model, False)
        model.train(was_training)
    crop = tuple(slice(a, a + n) for (a, _), n in zip(pads, orig_shape))
    acc_w = acc_w[crop]
    probs = acc_p[(slice(None),) + crop] / acc_w
    exp_h = acc_h[crop] / acc_w
    sdm = acc_s[(slice(None),) + crop] / acc_w if acc_s is not None else None
    pred_h = entropy(probs, axis=0).astype(np.float32)
    mi = np.maximum(pred_h - exp_h, 0.0).astype(np.float32) if mc else np.zeros_like(pred_h)
    return ModelSpaceOutput(probs.astype(np.float32), sdm, pred_h, mi, sampled / max(1, windows))


MC_SCOPES = ("decoder", "head")


def check_mc_scope(model: torch.nn.Module, mc_scope: str) -> None:
    """InputError (a ValueError) unless ``mc_scope`` is one of MC_SCOPES and ``model`` supports it."""
    from .errors import InputError

    if mc_scope not in MC_SCOPES:
        raise InputError(f"mc_scope must be one of {MC_SCOPES}, got '{mc_scope}'")
    if mc_scope == "head" and not (hasattr(model, "decode_trunk") and hasattr(model, "decode_heads")):
        raise InputError(
            f"head-only MC dropout needs a network with decode_trunk/decode_heads (V-Net); "
            f"{type(model).__name__} has none: use mc_scope 'decoder'"
        )


def _tensors_only(feats) -> bool:
    """True when ``feats`` is a tensor or nested lists/tuples of tensors (None allowed: V-Net, dual
    V-Net, V-Net trunk); the 2D U-Net's features carry their stack shape and are decoded one MC
    sample at a time."""
    if feats is None or torch.is_tensor(feats):
        return True
    return isinstance(feats, (list, tuple)) and all(_tensors_only(f) for f in feats)


def _select_windows(model: torch.nn.Module, feats, x: torch.Tensor, rows: torch.Tensor):
    """The features of the windows ``rows`` (indices into the batch): sliced from ``feats`` when it
    holds only tensors, else (the 2D U-Net's opaque features) ``model.encode`` of those windows."""
    if not _tensors_only(feats):
        return model.encode(x[rows])
    if feats is None:
        return None
    if torch.is_tensor(feats):
        return feats[rows]
    return type(feats)(_select_windows(model, f, x, rows) for f in feats)


def _repeat_batch(feats, m: int):
    """Every tensor of ``feats`` repeated ``m`` times along the batch (sample-major order)."""
    if feats is None:
        return None
    if torch.is_tensor(feats):
        return feats.repeat((m,) + (1,) * (feats.dim() - 1))
    return type(feats)(_repeat_batch(f, m) for f in feats)


def flip_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """All subsets of ``axes`` (the flip group they generate), identity first: (0, 1) -> (), (0,), (1,), (0, 1)."""
    axes = tuple(sorted(set(int(a) for a in axes)))
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def predict_model_space(
    model: torch.nn.Module,
    image: np.ndarray,
    patch_size,
    overlap: float = 0.5,
    mc_samples: int = 1,
    flip_axes: Sequence[int] = (),
    window_batch: int = 2,
    device: torch.device | str = "cpu",
    progress: Callable[[float], None] | None = None,
    rot90: bool = False,
    mc_scope: str = "decoder",
    mc_gate: float = 0.0,
) -> ModelSpaceOutput:
    """Sliding window with MC dropout and flip test-time augmentation (TTA), in model space.

    rot90: TTA over the 8 symmetries of the square in the (0, 1) plane (rotations by k x 90 degrees,
    each with and without a flip of axis 0) instead of the flips of ``flip_axes``: for networks
    trained with ``random_rot_flip``, which draws exactly these.

    The ensemble is the set of (flip, dropout mask) passes: F = 2^len(flip_axes) flips of the
    model-space image, and max(N, F) passes shared out over the flips as evenly as possible (so
    TTA costs no extra decoder passes once N >= F); dropout is on when N > 1. Outputs are flipped
    back and averaged with each flip weighted by its pass count: mean probability, expected entropy
    and mean SDM over all passes; then predictive entropy H(p_bar) and MI = H(p_bar) - E[H], as in
    ``sliding_window_predict`` (with flips only, MI measures the flips' disagreement).
    Use flips the network was trained to be invariant to (``data.transforms``: axes 0 and 1).
    mc_gate: per pass set, as in ``sliding_window_predict`` (its window share: the mean over flips).
    """
    flips = (
        [(k, axes) for axes in ((), (0,)) for k in range(4)] if rot90 else [(0, axes) for axes in flip_sets(flip_axes)]
    )
    if len(flips) == 1:
        return sliding_window_predict(
            model,
            image,
            patch_size,
            overlap,
            mc_samples,
            window_batch,
            device,
            progress,
            mc_scope=mc_scope,
            mc_gate=mc_gate,
        )
    total = max(int(mc_samples), len(flips))
    counts = [total // len(flips) + (1 if i < total % len(flips) else 0) for i in range(len(flips))]

    def undo(a: np.ndarray, k: int, axes: tuple, channels: bool) -> np.ndarray:
        """Inverse of x -> flip(rot90(x, k), axes) on an output (channel axis first when ``channels``)."""
        c = 1 if channels else 0
        return np.rot90(np.flip(a, tuple(x + c for x in axes)), -k, axes=(c, c + 1))

    acc_p = acc_h = acc_s = None
    shares = []
    for f, ((k, axes), n) in enumerate(zip(flips, counts)):

        def sub_progress(frac: float, f=f) -> None:
            if progress is not None:
                progress((f + frac) / len(flips))

        x = np.ascontiguousarray(np.flip(np.rot90(image, k, axes=(0, 1)), axes))
        out = sliding_window_predict(
            model,
            x,
            patch_size,
            overlap,
            n,
            window_batch,
            device,
            sub_progress,
            dropout=mc_samples > 1,
            mc_scope=mc_scope,
            mc_gate=mc_gate,
        )
        shares.append(out.mc_window_share)
        p = undo(out.probs, k, axes, True)
        h = undo(out.entropy - out.mutual_info, k, axes, False)  # this pass set's expected entropy E_t[H(p_t)]
        sd = None if out.sdm is None else undo(out.sdm, k, axes, True)
        w = n / total
        acc_p = p * w if acc_p is None else acc_p + p * w
        acc_h = h * w if acc_h is None else acc_h + h * w
        if sd is not None:
            acc_s = sd * w if acc_s is None else acc_s + sd * w
    pred_h = entropy(acc_p, axis=0).astype(np.float32)
    mi = np.maximum(pred_h - acc_h, 0.0).astype(np.float32)
    return ModelSpaceOutput(
        np.ascontiguousarray(acc_p, dtype=np.float32),
        None if acc_s is None else np.ascontiguousarray(acc_s, dtype=np.float32),
        pred_h,
        mi,
        float(np.mean(shares)),
    )


def largest_component(mask: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Keep the largest 26-connected component of a binary mask (empty stays empty); with ``weight``
    (same shape, e.g. the class probability) the component of largest total weight."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n <= 1:
        return mask.astype(bool)
    sizes = ndimage.sum_labels(np.ones_like(lab) if weight is None else weight, lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def keep_largest_per_class(labels: np.ndarray, num_classes: int, probs: np.ndarray | None = None) -> np.ndarray:
    """Largest-connected-component cleanup for every foreground class of a label map; with
    ``probs`` (K, ...) each class keeps its component of largest probability mass instead of the
    most voxels (a confident structure over a larger doubtful one)."""
    out = np.zeros_like(labels)
    for c in range(1, num_classes):
        out[largest_component(labels == c, None if probs is None else probs[c])] = c
    return out


@dataclass
class Prediction:
    """Results on the *input* grid (I, J, K) with the input's geometry.

    labels uint8; probs (K, I, J, K) float32; sdm (K-1, I, J, K) float32 in [-1, 1] (negative inside);
    entropy / mutual_info (I, J, K) float32 in nats; timings in seconds.
    """

    labels: Volume
    probs: np.ndarray
    sdm: np.ndarray | None
    entropy: Volume
    mutual_info: Volume
    timings: dict = field(default_factory=dict)

    def uncrop(self, full: Volume, box: tuple[slice, slice, slice], inside: np.ndarray | None = None) -> "Prediction":
        """This prediction (made on ``full.crop(box)``) on the whole grid of ``full``: outside the box
        (and, within it, where ``inside`` (box-shaped bool) is False) labels 0, probability 1 for
        background, SDM +1 (outside every structure), uncertainty 0."""

        def grow(a: np.ndarray, fill: float, channels: bool) -> np.ndarray:
            out = np.full((a.shape[0],) + full.shape if channels else full.shape, fill, dtype=a.dtype)
            out[((slice(None),) if channels else ()) + tuple(box)] = a
            return out

        probs = grow(self.probs, 0.0, True)
        outside = np.ones(full.shape, bool)
        outside[tuple(box)] = False if inside is None else ~inside
        probs[0][outside] = 1.0
        probs[1:, outside] = 0.0
        labels, ent, mi = (
            grow(self.labels.array, 0, False),
            grow(self.entropy.array, 0.0, False),
            grow(self.mutual_info.array, 0.0, False),
        )
        labels[outside], ent[outside], mi[outside] = 0, 0.0, 0.0
        sdm = None if self.sdm is None else grow(self.sdm, 1.0, True)
        if sdm is not None:
            sdm[:, outside] = 1.0
        return Prediction(
            labels=full.with_array(labels),
            probs=probs,
            sdm=sdm,
            entropy=full.with_array(ent),
            mutual_info=full.with_array(mi),
            timings={**self.timings, "roi_box": [[b.start, b.stop] for b in box]},
        )

    def foreground_probability(self) -> np.ndarray:
        """(I, J, K) float32 probability of any structure (1 - background)."""
        return (self.probs[1] if self.probs.shape[0] == 2 else 1.0 - self.probs[0]).astype(np.float32)

    def foreground_sdm(self) -> np.ndarray | None:
        """(I, J, K) float32 SDM of the union of structures: the per-class minimum (None without SDM head).

        The minimum of per-class normalized SDMs is negative exactly inside some structure; its
        magnitude is in each class's own normalization, so it is a display map, not a distance in mm.
        """
        if self.sdm is None:
            return None
        return (self.sdm[0] if self.sdm.shape[0] == 1 else self.sdm.min(axis=0)).astype(np.float32)


#: A cine model refuses inputs with more slices than this along k (ACDC stacks hold 6-21): such an
#: input is a 3D volume, not a short-axis stack.
MAX_CINE_SLICES = 40


def predict_volume(
    model: torch.nn.Module,
    volume: Volume,
    prep,
    patch_size,
    num_classes: int,
    mc_samples: int = 10,
    overlap: float = 0.5,
    device: str = "auto",
    window_batch: int = 2,
    postprocess: bool = True,
    progress: Callable[[float], None] | None = None,
    seed: int | None = 0,
    flip_axes: Sequence[int] = (),
    rot90_tta: bool = False,
    mc_scope: str = "decoder",
    mc_gate: float = 0.0,
    allow_large: bool = False,
) -> Prediction:
    """Volume on any grid -> Prediction on the same grid (preprocess, sliding window + MC, map back).

    flip_axes: model-space axes for flip TTA (``predict_model_space``); a model's checkpoint gives
    its default as ``inference.tta_flip_axes``. rot90_tta: the 8 in-plane rotations and flips instead
    (``inference.tta_rot90`` of a checkpoint). mc_scope, mc_gate: see ``sliding_window_predict``.
    postprocess: keep, per class, the connected component of largest probability mass (not the
    most voxels: a confident structure wins over a larger doubtful one, e.g. a stomach blob taken
    for the RV; on 40 ACDC and 12 LA training cases whose labels the models never used both rules
    pick the same component everywhere, so the rule was chosen on principle; see the cine card).
    seed: the MC-dropout masks are drawn from torch's RNG seeded with ``seed`` inside a forked RNG
    state (the caller's RNG is untouched), so the same input and model give the same output;
    None draws from the current global state.
    allow_large: run even when the model grid is far larger than the input (``check_workload``;
    the estimate is then only warned about).
    """
    dev = resolve_device(device)
    model = model.to(dev)
    if prep.in_plane_shape is not None and volume.shape[2] > MAX_CINE_SLICES:
        from .errors import InputError

        raise InputError(
            f"this is a 2D cine model for short-axis stacks (at most {MAX_CINE_SLICES} slices along k), "
            f"but the input has {volume.shape[2]} slices: a 3D volume needs a 3D model (e.g. 'la')"
        )
    t0 = time.perf_counter()
    model_spacing = prep.model_spacing(volume.shape, volume.spacing)  # axis order aside: only the voxel count matters
    check_memory(
        volume.shape,
        tuple(round(n * s / m) for n, s, m in zip(volume.shape, volume.spacing, model_spacing)),
        num_classes,
    )
    passes = 8 if rot90_tta else len(flip_sets(flip_axes))
    work = plan_workload(volume, prep, patch_size, overlap, mc_samples, passes)
    check_workload(work, allow_large, lambda: time_one_window(model, patch_size, dev))
    msi = to_model_space(volume, prep)
    t1 = time.perf_counter()
    devices = [dev.index or 0] if dev.type == "cuda" else []

    def run(batch: int, device: torch.device) -> ModelSpaceOutput:
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            return predict_model_space(
                model.to(device),
                msi.array,
                patch_size,
                overlap,
                mc_samples,
                flip_axes,
                batch,
                device,
                progress,
                rot90=rot90_tta,
                mc_scope=mc_scope,
                mc_gate=mc_gate,
            )

    out, dev = run_with_oom_fallback(run, window_batch, dev)
    t2 = time.perf_counter()
    probs = np.clip(msi.to_input_grid(out.probs), 0.0, 1.0)
    probs /= np.maximum(probs.sum(0, keepdims=True), 1e-6)
    labels = np.argmax(probs, axis=0).astype(np.uint8)
    if postprocess:  # by probability mass: chosen on unused-label training cases, see models/acdc_bmtctl.md
        labels = keep_largest_per_class(labels, num_classes, probs)
    sdm = np.clip(msi.to_input_grid(out.sdm), -1.0, 1.0) if out.sdm is not None else None
    ent = np.maximum(msi.to_input_grid(out.entropy), 0.0)
    mi = np.maximum(msi.to_input_grid(out.mutual_info), 0.0)
    t3 = time.perf_counter()
    grid = volume
    return Prediction(
        labels=grid.with_array(labels),
        probs=probs.astype(np.float32),
        sdm=None if sdm is None else sdm.astype(np.float32),
        entropy=grid.with_array(ent.astype(np.float32)),
        mutual_info=grid.with_array(mi.astype(np.float32)),
        timings={
            "preprocess_s": t1 - t0,
            "network_s": t2 - t1,
            "postprocess_s": t3 - t2,
            "total_s": t3 - t0,
            "device": str(dev),
            "mc_samples": int(mc_samples),
            "tta_flip_axes": list(flip_axes),
            "tta_rot90": bool(rot90_tta),
            "mc_scope": mc_scope,
            "mc_gate": float(mc_gate),
            "mc_window_share": out.mc_window_share,
        },
    )


#: cgroup "no limit" values at or above this (v1 reports the largest page-aligned int64) count as none.
_CGROUP_UNLIMITED = 2**60


def _read_int(path) -> int | None:
    try:
        text = open(path).read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat_value(path, key: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _own_cgroup_paths(proc_cgroup) -> tuple[str | None, str | None]:
    """(cgroup v2 path, cgroup v1 memory-controller path) of this process from /proc/self/cgroup."""
    v2 = v1 = None
    try:
        with open(proc_cgroup) as f:
            for line in f:
                parts = line.rstrip("\n").split(":", 2)
                if len(parts) != 3:
                    continue
                if parts[0] == "0" and parts[1] == "":
                    v2 = parts[2]
                elif "memory" in parts[1].split(","):
                    v1 = parts[2]
    except OSError:
        pass
    return v2, v1


def cgroup_available_bytes(root="/sys/fs/cgroup", proc_cgroup="/proc/self/cgroup") -> int | None:
    """Memory this process's container may still use: its cgroup's limit minus what the cgroup uses
    (less the inactive page cache, which the kernel reclaims before it kills), or None without a limit.

    cgroup v2: ``memory.max`` / ``memory.current`` / ``memory.stat`` (inactive_file); v1:
    ``memory/memory.limit_in_bytes`` / ``memory.usage_in_bytes`` / ``memory.stat`` (total_inactive_file).
    Looked up in the process's own cgroup (``proc_cgroup``) and at the mount's root (inside a
    container the two coincide); the smallest limit found counts. ``root`` and ``proc_cgroup`` are
    parameters so that tests can stand in a folder of their own."""
    from pathlib import Path

    root = Path(root)
    v2_path, v1_path = _own_cgroup_paths(proc_cgroup)
    candidates = []  # (limit file, usage file, stat file, inactive key)
    for rel in {"", (v2_path or "").lstrip("/")}:
        base = root / rel if rel else root
        candidates.append((base / "memory.max", base / "memory.current", base / "memory.stat", "inactive_file"))
    for rel in {"", (v1_path or "").lstrip("/")}:
        base = root / "memory" / rel if rel else root / "memory"
        candidates.append(
            (
                base / "memory.limit_in_bytes",
                base / "memory.usage_in_bytes",
                base / "memory.stat",
                "total_inactive_file",
            )
        )
    best = None
    for limit_file, usage_file, stat_file, key in candidates:
        limit = _read_int(limit_file)
        if limit is None or limit >= _CGROUP_UNLIMITED:
            continue
        usage = _read_int(usage_file) or 0
        free = max(0, limit - max(0, usage - _stat_value(stat_file, key)))
        best = free if best is None else min(best, free)
    return best


def host_available_bytes(meminfo="/proc/meminfo") -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else free physical pages; None when unknown."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def available_memory_bytes() -> int | None:
    """Memory available to this process: the host's (``host_available_bytes``) or, inside a
    container with a memory limit, the cgroup's (``cgroup_available_bytes``), whichever is smaller;
    None when neither is known."""
    known = [v for v in (host_available_bytes(), cgroup_available_bytes()) if v is not None]
    return min(known) if known else None


def estimate_inference_bytes(input_shape: Sequence[int], model_shape: Sequence[int], num_classes: int) -> int:
    """Peak host memory of ``predict_volume`` (float32), from the array sizes it allocates.

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
    from .errors import InputError

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
    """What a ``predict_volume`` call will run, planned before any work (``plan_workload``)."""

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
    from .volume import canonical_reorientation

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
        from .errors import InputError

        raise InputError(f"{text}; pass --allow-large to run it anyway, or give a volume nearer the model's spacing")
    import sys

    print(f"warning: {text}", file=sys.stderr, flush=True)
    return seconds


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_with_oom_fallback(
    run: Callable[[int, torch.device], "ModelSpaceOutput"], window_batch: int, device: torch.device
) -> tuple["ModelSpaceOutput", torch.device]:
    """``run(window_batch, device)``; on CUDA out-of-memory retry with half the window batch (down to
    1), then on the CPU, each time with a warning. Returns (result, the device that produced it)."""
    import warnings

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


def model_flip_axes(meta: dict) -> list[int]:
    """The flip-TTA axes a checkpoint asks for (``inference.tta_flip_axes``; none if absent)."""
    return [int(a) for a in (meta.get("inference") or {}).get("tta_flip_axes", [])]


def model_rot90_tta(meta: dict) -> bool:
    """Whether a checkpoint asks for the 8-fold in-plane rotation/flip TTA (``inference.tta_rot90``)."""
    return bool((meta.get("inference") or {}).get("tta_rot90", False))


def model_mc_scope(meta: dict) -> str:
    """The MC-dropout scope a checkpoint asks for (``inference.mc_scope``; "decoder" if absent)."""
    return str((meta.get("inference") or {}).get("mc_scope", "decoder"))


def predict_with_model(
    model: torch.nn.Module, meta: dict, volume: Volume, mc_samples: int = 10, tta: bool = True, **kwargs
) -> Prediction:
    """``predict_volume`` with everything a checkpoint fixes taken from its metadata ``meta``
    (preprocessing, patch size, classes, flip or rotation TTA unless ``tta`` is False, MC scope
    unless ``mc_scope`` is given); other kwargs go through."""
    from .preprocessing import Preprocessing

    if kwargs.get("mc_scope") is None:
        kwargs["mc_scope"] = model_mc_scope(meta)
    return predict_volume(
        model,
        volume,
        Preprocessing.from_dict(meta["preprocessing"]),
        tuple(meta["patch_size"]),
        int(meta["network"]["num_classes"]),
        mc_samples=mc_samples,
        flip_axes=model_flip_axes(meta) if tta else (),
        rot90_tta=tta and model_rot90_tta(meta),
        **kwargs,
    )
