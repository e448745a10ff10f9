"""MTN's losses (paper 002): myocardial-area regression and the uncertainty-weighted task sum."""

from __future__ import annotations

import torch


def area_regression_loss(area_pred: torch.Tensor, area_target: torch.Tensor) -> torch.Tensor:
    """L1 = mean |a_pred - a| (paper 002, Eq. 3-4: the residual of its Laplace likelihood), per slice.

    area_pred, area_target: (B[, Z]) areas as fractions of the slice's pixels.
    """
    return (area_pred - area_target).abs().mean()


def uncertainty_weighted_loss(l1: torch.Tensor, l2: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """Eq. (5) of paper 002: exp(-s1) L1 + exp(-2 s2) L2 + s1 + s2 (s = log sigma, learned).

    l1: the regression loss (Laplace, weight 1/sigma_1); l2: the segmentation cross-entropy (softmax
    likelihood, weight 1/sigma_2^2).
    """
    return torch.exp(-s1) * l1 + torch.exp(-2.0 * s2) * l2 + s1 + s2
