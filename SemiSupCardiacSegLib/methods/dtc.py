"""DTC, dual-task consistency (Luo, Chen, Song, Wang, AAAI 2021; the DTML paper's 003 baseline).

One V-Net with a segmentation head (softmax p) and an SDM head (tanh s). Loss per iteration:

    L = L_seg(p_L, y) + alpha * MSE(s_L, SDM(y))                 on labeled images
      + lambda(t) * mean_c MSE(sigmoid(-k * s_c), p_c)           on ALL images (labeled + unlabeled)

* ``sigmoid(-k s)`` is the smooth inverse of the SDM transform (``sdm.sdm_to_probability``):
  negative (inside) -> ~1, positive -> ~0, with k = 1500 as in the paper and reference code.
* lambda(t) = ``consistency`` * exp(-5 (1 - t / t_r)^2) (the same Gaussian warm-up as SASSNet),
  t_r = ``consistency_rampup`` x iterations. The reference code ramps over 40 "epochs" of 150
  iterations (= its 6000-iteration schedule), i.e. over the whole run: ``consistency_rampup`` 1.0.
* L_seg: 0.5 (CE + Dice) as the reference code (``seg_loss`` 'dice_ce'); alpha = 0.3.

Choice the paper leaves open: for multi-class models the consistency is averaged over the
foreground classes c >= 1 (the reference code is binary); background has no SDM channel.
"""

from __future__ import annotations

import torch

from ..losses import dual_task_consistency_loss
from ..sdm import sdm_to_probability
from .base import OptimizerStep, StepOutput, register
from .supervised import Supervised


@register("dtc")
class DTC(Supervised):
    uses_unlabeled = True
    defaults = {"seg_loss": "dice_ce", "sdm_weight": 0.3, "consistency": 1.0, "consistency_rampup": 1.0, "k": 1500.0}

    def training_step(self, batch, iteration):
        n = int(batch["n_labeled"])
        out = self.model(batch["image"])
        sup, logs = self.supervised_losses(out, batch, n)
        prob_fg = torch.softmax(out["seg"], dim=1)[:, 1:]
        from_sdm = sdm_to_probability(out["sdm"], float(self.config["k"]))
        consistency = dual_task_consistency_loss(prob_fg, from_sdm)
        lam = self.consistency_weight(iteration)
        loss = sup + lam * consistency
        logs.update(loss=float(loss.detach()), loss_consistency=float(consistency.detach()), consistency_weight=lam)
        return StepOutput((OptimizerStep("model", loss),), logs)
