"""DTML, dual-task mutual learning (Zhang, Zhang, Wang, Yang, Cai; paper 003).

Two V-Nets of the same backbone (``networks.DualTaskVNet``): M_s gives the segmentation
probability f_seg = softmax, M_d the signed distance map f_dis = tanh. Losses (equations 4 and 6):

    for theta_seg:  L_seg(f_seg(X_L), Y)                          + L_con on all images
    for theta_dis:  L_mask(T^{-1}(f_dis(X_L)), Y)                 + L_con on all images
    L_con = lambda_con(t) * || f_seg(X) - T^{-1}(f_dis(X)) ||^2   (mean over voxels and classes)

* T^{-1}(z) = sigmoid(-k z), k = 1500 (``sdm.sdm_to_probability``). The paper's eq. (2) prints
  1/(1 + e^{-k z}), which with its own SDM sign convention (negative inside) would map the inside
  to 0; we use the sign of DTC's reference code, which the paper follows ([10]).
* L_seg = 0.5 (CE + Dice); L_mask = soft Dice of T^{-1}(f_dis) against the label (the paper's
  best option, Table 1).
* lambda_con(t) = 0.1 * exp(-5 (1 - t / t_max)^2), following UA-MT ([27]) whose reference code ramps
  over its whole run (``consistency_rampup`` 1.0 x iterations). The paper prints the exponent
  without the square; we follow the cited function.
* Both networks are updated from one summed loss L_seg + L_mask + L_con by one SGD optimizer: the
  gradient of that sum w.r.t. theta_seg is that of L_seg + L_con and w.r.t. theta_dis that of
  L_mask + L_con, exactly the two minimisations of eq. (6) with the same SGD settings.
* Each network's unused head (M_s's SDM head, M_d's segmentation head) gets no loss and no
  gradient; it is kept only so both networks share the V-Net code.
"""

from __future__ import annotations

import torch

from ..losses import dual_task_consistency_loss, sdm_mask_dice_loss, segmentation_loss
from ..sdm import sdm_to_probability
from .base import Method, OptimizerStep, StepOutput, register


@register("dtml")
class DTML(Method):
    uses_unlabeled = True
    defaults = {"seg_loss": "dice_ce", "consistency": 0.1, "consistency_rampup": 1.0, "k": 1500.0}

    def __init__(self, config: dict):
        super().__init__({**config, "arch": "dual_vnet"})

    def training_step(self, batch, iteration):
        n = int(batch["n_labeled"])
        out = self.model(batch["image"])
        prob = torch.softmax(out["seg"], dim=1)  # (B, K, ...)
        from_sdm = sdm_to_probability(out["sdm"], float(self.config["k"]))  # (B, K-1, ...)
        loss_seg = segmentation_loss(self.config["seg_loss"], out["seg"][:n], batch["label"][:n])
        loss_mask = sdm_mask_dice_loss(from_sdm[:n], batch["label"][:n])
        consistency = dual_task_consistency_loss(prob[:, 1:], from_sdm)
        lam = self.consistency_weight(iteration)
        loss = loss_seg + loss_mask + lam * consistency
        logs = {
            "loss": float(loss.detach()),
            "loss_seg": float(loss_seg.detach()),
            "loss_mask": float(loss_mask.detach()),
            "loss_consistency": float(consistency.detach()),
            "consistency_weight": lam,
        }
        return StepOutput((OptimizerStep("model", loss),), logs)
