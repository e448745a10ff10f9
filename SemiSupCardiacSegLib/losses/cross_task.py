"""Cross-task, uncertainty-guided and adversarial Geman-McClure losses (MTCTL 000, BMT-CTL 001).

Sign convention: our SDMs are negative inside (``sdm``), so the SDM -> mask transform of the papers,
pi^{-1}(d) = 1 / (1 + exp(-k d)) for an SDM positive inside, is sigmoid(-k * sdm) here
(``sdm.sdm_to_probability``), k = 1500 as in DTC's reference code (paper 000 cites DTC [12] for it).
"""

from __future__ import annotations

import torch


def cross_task_loss(seg_probs: torch.Tensor, sdm_probs: torch.Tensor) -> torch.Tensor:
    """MTCTL's L_cross-task: mean over all voxels and structures of (f_seg - pi^{-1}(f_sdm))^2.

    seg_probs, sdm_probs: (B, K-1, ...) foreground probabilities of the segmentation head and of the
    transformed SDM head. The paper sums ||.||^2 over the images; we average over voxels (as DTC's
    reference code) so the weight does not depend on the patch size.
    """
    return ((seg_probs - sdm_probs) ** 2).mean()


def guidance_loss(seg_probs: torch.Tensor, sdm_probs: torch.Tensor, certain: torch.Tensor) -> torch.Tensor:
    """MTCTL's L_G: the squared difference averaged only over voxels where U(x) < t.

    certain: (B, ...) bool/float mask B(U(x) < t) (broadcast over the K-1 channels). Where no voxel is
    certain the loss is 0 (the paper's ratio is 0/0 there) and passes no gradient.
    """
    mask = certain.to(seg_probs.dtype).unsqueeze(1).expand_as(seg_probs)
    denom = mask.sum()
    if float(denom) == 0.0:
        return (seg_probs * 0.0).sum()
    return (mask * (seg_probs - sdm_probs) ** 2).sum() / denom


def geman_mcclure(r2: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """rho(r^2) = r^2 / (2 beta + r^2), the robust form of Eq. (1) of paper 000 (in [0, 1))."""
    return r2 / (2.0 * beta + r2)


def adv_gm_discriminator_loss(
    score_labeled: torch.Tensor, score_unlabeled: torch.Tensor, beta: float = 0.5
) -> torch.Tensor:
    """Eq. (1) of paper 000 as printed, the discriminator's objective: least-squares residuals
    D(x_l, dist_l) - 0 and D(x_ul, dist_ul) - 1 of raw scores (LSGAN targets: labeled 0, unlabeled 1),
    r^2 = D_l^2 + (D_ul - 1)^2 per labeled/unlabeled pair, loss = mean rho(r^2).
    Pairs are formed row by row (the batches hold as many labeled as unlabeled rows; the shorter sets the count).
    """
    n = min(score_labeled.shape[0], score_unlabeled.shape[0])
    r2 = score_labeled[:n] ** 2 + (score_unlabeled[:n] - 1.0) ** 2
    return geman_mcclure(r2, beta).mean()


def adv_gm_generator_loss(score_unlabeled: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """The segmenter's side (LSGAN generator with the GM penalty): make unlabeled SDMs score like
    labeled ones, r^2 = (D(x_ul, dist_ul) - 0)^2, loss = mean rho(r^2)."""
    return geman_mcclure(score_unlabeled**2, beta).mean()
