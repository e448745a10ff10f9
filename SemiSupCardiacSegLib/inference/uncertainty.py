"""The uncertainty of an ensemble of passes (MC-dropout samples, TTA passes): one accumulator for both.

Over passes t with weights w_t (sum W) we accumulate:
* mean probability  p_bar = 1/W sum_t w_t p_t
* expected entropy  E_H   = 1/W sum_t w_t H(p_t)
* mean SDM          1/W sum_t w_t s_t
Then predictive entropy H(p_bar) = -sum_k p_bar_k log p_bar_k (nats) and mutual information
MI = H(p_bar) - E_H (the epistemic part: the passes' disagreement). The sums work on torch tensors
(per window, on the device) and numpy arrays (per TTA pass, on the CPU) alike.
"""

from __future__ import annotations

import numpy as np
import torch


def entropy(p: np.ndarray, axis: int = 0) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (0 log 0 = 0)."""
    p = np.clip(p, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=axis)


def class_entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats over the class axis 1 of (B, K, ...) probabilities -> (B, ...)."""
    return -(p.clamp_min(1e-12).log() * p).sum(1)


class UncertaintyAccumulator:
    """Weighted sums of probabilities (K, ...), their entropies and SDMs (K-1, ...) over passes."""

    def __init__(self) -> None:
        self._sums: dict[str, object] = {}
        self.weight = 0.0

    def add(self, probs, sdm=None, expected_entropy=None, weight: float = 1.0, with_entropy: bool = True) -> None:
        """One pass (or a set of passes summarised by its means): ``probs`` (B, K, ...) tensor or
        (K, ...) array; ``expected_entropy`` its E_H (B, ...) / (...), by default H(probs) (a single
        pass, torch); ``sdm`` or None. with_entropy False: no E_H kept (a deterministic pass needs
        none: its MI is 0 and its entropy H(p_bar))."""
        h = None if not with_entropy else class_entropy(probs) if expected_entropy is None else expected_entropy
        for name, value in (("probs", probs), ("expected_entropy", h), ("sdm", sdm)):
            if value is None:
                continue
            term = value if weight == 1.0 else value * weight
            self._sums[name] = term if name not in self._sums else self._sums[name] + term
        self.weight += weight

    def mean(self) -> dict:
        """{"probs": p_bar, "expected_entropy": E_H, "sdm": mean SDM (absent without SDM)}."""
        return {name: total / self.weight for name, total in self._sums.items()}


def predictive_uncertainty(
    probs: np.ndarray, expected_entropy: np.ndarray | None, epistemic: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(H(p_bar), MI = max(H(p_bar) - E_H, 0)) float32 from p_bar (K, ...) and E_H (...). epistemic
    False (one deterministic pass): MI = 0, as H(p_bar) and E_H then differ only by the blending of
    overlapping windows (E_H is not needed and may be None)."""
    pred_h = entropy(probs, axis=0).astype(np.float32)
    mi = np.maximum(pred_h - expected_entropy, 0.0).astype(np.float32) if epistemic else np.zeros_like(pred_h)
    return pred_h, mi
