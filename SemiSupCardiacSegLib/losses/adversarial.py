"""Adversarial losses on the discriminator's "is labeled" logit (binary cross-entropy with logits).

SASSNet (004, Eq. 5-6): the discriminator D learns labeled -> 1, unlabeled -> 0; the segmenter
minimizes -log D(X_m, S_m) on unlabeled images (the non-saturating generator surrogate), i.e.
it tries to make its unlabeled SDMs look labeled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(logits_labeled: torch.Tensor, logits_unlabeled: torch.Tensor) -> torch.Tensor:
    """BCE with targets labeled = 1, unlabeled = 0, averaged over all samples."""
    logits = torch.cat([logits_labeled, logits_unlabeled])
    target = torch.cat([torch.ones_like(logits_labeled), torch.zeros_like(logits_unlabeled)])
    return F.binary_cross_entropy_with_logits(logits, target)


def generator_loss(logits_unlabeled: torch.Tensor) -> torch.Tensor:
    """-log D on unlabeled samples = BCE with target 1."""
    return F.binary_cross_entropy_with_logits(logits_unlabeled, torch.ones_like(logits_unlabeled))
