"""MTN (paper 002): U-Net segmentation + myocardial-area regression, task weights learned as uncertainties.

Network: ``UNet2D`` with ``area_head``: the regression path splits off at the last up-sampling and
concatenation (its own last up-block), then pools and a linear layer gives one number per slice.
The paper down-samples the final map by max-pooling to 1/4 of its size and flattens it into the
fully-connected layer, which fixes the input size; we pool globally (average) so any slice size works.

Loss, Eq. (5) with s_i = log sigma_i learned as parameters (initialised at 0, sigma = 1):
    L = exp(-s1) * L1 + exp(-2 s2) * L2 + s1 + s2
L1 = mean absolute difference between predicted and true myocardial area (Laplace likelihood),
L2 = cross-entropy of the segmentation (softmax likelihood), on labeled images only (MTN is
supervised: ``uses_unlabeled`` False). Area unit: the fraction of the slice's model-grid pixels in
class ``area_class`` (2 = myocardium in ACDC). The paper reports mm^2, which needs spacing the ACDC
h5 files do not store; its regression path flattens the (pooled) map into a fully-connected layer,
so its output is a sum over a fixed-size slice, while ours pools globally (average), so its natural
output is a fraction, and one that does not change with the slice size (128 x 128 training crops,
192 x 192 at inference). An earlier unit, hundreds of pixels (targets ~15 on a 128 x 128 crop), was
out of the head's reach in a short run: L1 stayed at 3-6 for 150 iterations while its constant-size
gradient (L1 is a sign) pulled the shared decoder, and the run's validation Dice was 0.0 (logged in
the commit that changed it). sigma_1 absorbs the unit in the loss; the unit matters for the head.
``sdm_weight`` (0.3) also trains the SDM head the product displays (set 0 with ``network.sdm_head``
false for the paper's network exactly). Optimiser in the paper: RMSprop lr 1e-3, x0.95 per epoch.
"""

from __future__ import annotations

import torch
from torch import nn

from ..losses import area_regression_loss, sdm_regression_loss, segmentation_loss, uncertainty_weighted_loss
from .base import OptimizerStep, StepOutput, register
from .supervised import Supervised


def myocardial_area(label: torch.Tensor, area_class: int) -> torch.Tensor:
    """(B, X, Y[, Z]) labels -> (B[, Z]) area of ``area_class`` per slice as a fraction of the slice's pixels."""
    return (label == area_class).to(torch.float32).mean(dim=(1, 2))


@register("mtn")
class MTN(Supervised):
    uses_unlabeled = False
    defaults = {"seg_loss": "ce", "sdm_weight": 0.3, "area_class": 2}

    def __init__(self, config: dict):
        config = dict(config)
        config["network"] = {**config.get("network", {}), "area_head": True}
        config.setdefault("arch", "unet2d")
        super().__init__(config)
        self.log_sigma = nn.Parameter(torch.zeros(2))  # (s1 regression, s2 segmentation)

    def optimizer_groups(self):
        return {"model": list(self.model.parameters()) + [self.log_sigma]}

    def training_step(self, batch, iteration):
        n = int(batch["n_labeled"])
        out = self.model(batch["image"][:n])
        label = batch["label"][:n]
        l2 = segmentation_loss(self.config["seg_loss"], out["seg"], label)
        l1 = area_regression_loss(out["area"], myocardial_area(label, int(self.config["area_class"])))
        loss = uncertainty_weighted_loss(l1, l2, self.log_sigma[0], self.log_sigma[1])
        logs = {
            "loss_seg": float(l2.detach()),
            "loss_area": float(l1.detach()),
            "log_sigma_area": float(self.log_sigma[0].detach()),
            "log_sigma_seg": float(self.log_sigma[1].detach()),
        }
        w = float(self.config["sdm_weight"])
        if w > 0 and "sdm" in out:
            sdm = sdm_regression_loss(out["sdm"], batch["sdm"][:n])
            loss = loss + w * sdm
            logs["loss_sdm"] = float(sdm.detach())
        logs["loss"] = float(loss.detach())
        return StepOutput((OptimizerStep("model", loss),), logs)
