"""Supervised baseline: the V-Net trained on labeled images only (the papers' lower/upper bounds).

Loss: segmentation loss (``seg_loss``: 'dice_ce' = 0.5 (CE + Dice), the UA-MT/DTC reference's
supervised loss) + ``sdm_weight`` * MSE(SDM head, normalized SDM of the label). With
``sdm_weight = 0`` this is the plain V-Net of the papers' tables; the default 0.3 (SASSNet's alpha,
= "V-Net + SDM" of SASSNet Table 2) also trains the SDM head, which the product displays.
"""

from __future__ import annotations

import torch

from ..losses import sdm_regression_loss, segmentation_loss
from .base import Method, OptimizerStep, StepOutput, register


@register("supervised")
class Supervised(Method):
    uses_unlabeled = False
    defaults = {"seg_loss": "dice_ce", "sdm_weight": 0.3}

    def supervised_losses(self, out: dict, batch: dict, n: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Seg + weighted SDM loss on the first ``n`` (labeled) rows of ``out``/``batch``."""
        seg = segmentation_loss(self.config["seg_loss"], out["seg"][:n], batch["label"][:n])
        logs = {"loss_seg": float(seg.detach())}
        loss = seg
        w = float(self.config["sdm_weight"])
        if w > 0 and "sdm" in out:
            sdm = sdm_regression_loss(out["sdm"][:n], batch["sdm"][:n])
            loss = loss + w * sdm
            logs["loss_sdm"] = float(sdm.detach())
        return loss, logs

    def training_step(self, batch, iteration):
        n = int(batch["n_labeled"])
        out = self.model(batch["image"][:n])
        loss, logs = self.supervised_losses(out, batch, n)
        logs["loss"] = float(loss.detach())
        return StepOutput((OptimizerStep("model", loss),), logs)
