"""A generic sliding window over a model-space image: it knows nothing of what runs in a window.

Windows of ``patch`` voxels at stride ``patch * (1 - overlap)`` cover the (padded) volume; each
window's outputs are weighted by a Gaussian importance map (sigma = 1/8 of the window, nnU-Net)
and the weighted sums are divided by the summed weights. Windows are run in batches of
``window_batch``; accumulators live on the CPU in float32, so memory is bounded by (output
channels + 1) x voxels x 4 bytes plus one window batch on the device.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

#: A window function: a batch of windows (B, 1, X, Y, Z) -> named outputs, each (B, C, X, Y, Z) or (B, X, Y, Z).
WindowFn = Callable[[torch.Tensor], dict[str, torch.Tensor]]


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
    """The window start corners ``sliding_window`` runs on an image of ``shape`` (already padded
    to at least ``patch`` along every axis; a smaller axis counts as padded)."""
    patch = [int(p) for p in patch]
    overlaps = [float(o) for o in overlap] if isinstance(overlap, (list, tuple)) else [float(overlap)] * 3
    stride = [max(1, int(round(p * (1.0 - o)))) for p, o in zip(patch, overlaps)]
    axes = [window_starts(max(int(n), p), p, st) for n, p, st in zip(shape, patch, stride)]
    return [(x, y, z) for x in axes[0] for y in axes[1] for z in axes[2]]


def sliding_window(
    window_fn: WindowFn,
    image: np.ndarray,
    patch: Sequence[int],
    overlap: float | Sequence[float] = 0.5,
    window_batch: int = 2,
    device: torch.device | str = "cpu",
    progress: Callable[[float], None] | None = None,
) -> dict[str, np.ndarray]:
    """Blend ``window_fn``'s outputs over ``image`` (X, Y, Z): zero-pad to at least ``patch``, run
    every window (batches of ``window_batch``, on ``device``), weight each output by the Gaussian
    map, divide by the summed weights and crop back. -> {name: (C, X, Y, Z) or (X, Y, Z) float32}."""
    device = torch.device(device)
    patch = tuple(int(p) for p in patch)
    orig_shape = image.shape
    pads = [(max(0, p - n) // 2, max(0, p - n) - max(0, p - n) // 2) for n, p in zip(orig_shape, patch)]
    img = np.pad(image, pads, mode="constant") if any(a or b for a, b in pads) else image
    shape = img.shape
    starts = window_grid(shape, patch, overlap)
    weight = gaussian_importance(patch)
    weight_t = torch.from_numpy(weight).to(device)
    sums: dict[str, np.ndarray] = {}
    weights = np.zeros(shape, np.float32)
    for b0 in range(0, len(starts), window_batch):
        chunk = starts[b0 : b0 + window_batch]
        x = torch.from_numpy(
            np.stack([img[sx : sx + patch[0], sy : sy + patch[1], sz : sz + patch[2]] for sx, sy, sz in chunk])
        )
        outputs = window_fn(x[:, None].to(device=device, dtype=torch.float32))
        weighted = {name: (out * weight_t).cpu().numpy() for name, out in outputs.items()}
        for name, w_out in weighted.items():
            if name not in sums:
                sums[name] = np.zeros(w_out.shape[1:-3] + shape, np.float32)
        for i, (sx, sy, sz) in enumerate(chunk):
            sl = (slice(sx, sx + patch[0]), slice(sy, sy + patch[1]), slice(sz, sz + patch[2]))
            for name, w_out in weighted.items():
                sums[name][(Ellipsis,) + sl] += w_out[i]
            weights[sl] += weight
        if progress is not None:
            progress(min(1.0, (b0 + len(chunk)) / len(starts)))
    crop = tuple(slice(a, a + n) for (a, _), n in zip(pads, orig_shape))
    weights = weights[crop]
    return {name: total[(Ellipsis,) + crop] / weights for name, total in sums.items()}
