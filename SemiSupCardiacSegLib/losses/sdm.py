"""Losses on the signed-distance-map (SDM) head: regression to the label's SDM and the dual-task terms.

Sign convention: our SDMs are negative inside (``sdm``); ``sdm.sdm_to_probability`` maps an SDM to a
foreground probability, sigmoid(-k * sdm), k = 1500 (DTC's reference code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .dice import soft_dice_loss


def sdm_regression_loss(sdm_pred: torch.Tensor, sdm_target: torch.Tensor) -> torch.Tensor:
    """L_sdm = mean (f_sdm(X) - SDM(Y))^2 over voxels and foreground classes, the SDM head's MSE against
    the normalized SDM of the label (SASSNet, Li et al. MICCAI 2020, Eq. 3; DTC's alpha term).

    sdm_pred, sdm_target: (B, K-1, ...) in [-1, 1].
    """
    return F.mse_loss(sdm_pred, sdm_target)


def dual_task_consistency_loss(seg_probs: torch.Tensor, sdm_probs: torch.Tensor) -> torch.Tensor:
    """L_con = mean_c mean_voxels (f_seg,c(X) - sigmoid(-k f_sdm,c(X)))^2 (DTC's L_DTC, Luo et al.
    AAAI 2021; DTML's L_con, paper 003 Eq. 4, without its weight), on every image, labeled or not.

    seg_probs: (B, K-1, ...) foreground softmax; sdm_probs: (B, K-1, ...) the transformed SDM head.
    The same quantity as MTCTL's ``cross_task_loss``, kept as torch's MSE (its reduction and
    gradient, bit for bit) for the two methods that have always used it.
    """
    return F.mse_loss(seg_probs, sdm_probs)


def sdm_mask_dice_loss(sdm_probs: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """DTML's L_mask (paper 003, the supervision of M_d; its best option in Table 1): soft Dice of T^{-1}(f_dis(X_L)) =
    sigmoid(-k f_dis) against the label, 1 - (2 sum(p g) + eps) / (sum(p) + sum(g) + eps) per class.

    sdm_probs: (B, K-1, ...) transformed SDM of labeled images; label: (B, ...) int labels in [0, K).
    A zero background channel is put in front: ``soft_dice_loss`` ignores channel 0.
    """
    padded = torch.cat([torch.zeros_like(sdm_probs[:, :1]), sdm_probs], dim=1)
    return soft_dice_loss(padded, label)
