"""Soft Dice loss and Dice + cross-entropy, on softmax probabilities.

``soft_dice_loss`` is the plain form of the UA-MT /
SASSNet reference (``dice_loss``): 1 - (2 * sum(p * g) + eps) / (sum(p) + sum(g) + eps) with
eps = 1e-5, summed over the whole batch (not per sample), per foreground class, averaged over
classes. With an empty target and an empty prediction the loss is 0; with an empty target and any
foreground prediction it approaches 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5


def soft_dice_loss(
    probs: torch.Tensor, target: torch.Tensor, eps: float = EPS, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """probs: (B, K, ...) softmax; target: (B, ...) int labels in [0, K). Mean over foreground classes.

    weight: optional (B, ...) voxel weights >= 0: each voxel counted w times in every sum,
    1 - (2 sum w p g + eps) / (sum w p + sum w g + eps) (BCP's mixes, ``methods.copy_paste``)."""
    k = probs.shape[1]
    losses = []
    for c in range(1, k):
        p = probs[:, c]
        g = (target == c).to(p.dtype)
        wg = g if weight is None else g * weight
        wp = p if weight is None else p * weight
        inter = (p * wg).sum()
        losses.append(1.0 - (2.0 * inter + eps) / (wp.sum() + wg.sum() + eps))
    return torch.stack(losses).mean()


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """0.5 * (cross-entropy + soft Dice) on logits (B, K, ...) and labels (B, ...) (UA-MT / DTC).

    weight: optional (B, ...) voxel weights >= 0; the cross-entropy is then sum(w ce) / sum(w)."""
    if weight is None:
        ce = F.cross_entropy(logits, target.long())
    else:
        weight = weight.to(logits.dtype)
        ce = (F.cross_entropy(logits, target.long(), reduction="none") * weight).sum() / weight.sum().clamp_min(EPS)
    return 0.5 * (ce + soft_dice_loss(torch.softmax(logits, dim=1), target, weight=weight))


def segmentation_loss(kind: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """'dice' (SASSNet reference), 'dice_ce' (UA-MT / DTC reference) or 'ce' (MTN, paper 002)."""
    if kind == "ce":
        return F.cross_entropy(logits, target.long())
    if kind == "dice":
        return soft_dice_loss(torch.softmax(logits, dim=1), target)
    if kind == "dice_ce":
        return dice_ce_loss(logits, target)
    raise ValueError(f"unknown segmentation loss '{kind}'")
