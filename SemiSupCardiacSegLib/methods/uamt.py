"""UA-MT, uncertainty-aware mean teacher (Yu, Wang, Li, Fu, Heng, MICCAI 2019; the LA baseline of
papers 000, 003 and 004).

* Student: the V-Net (``self.model``, used at inference). Teacher: an exponential moving average
  of the student's parameters, theta'_t = a theta'_{t-1} + (1 - a) theta_t with
  a = min(1 - 1/(t + 1), ``ema_decay`` = 0.99) (the reference code's warm start of the average).
  Only parameters are averaged; the teacher's BatchNorm statistics come from its own forward
  passes, as in the reference code, where the teacher runs in train mode (dropout on).
* Teacher target on unlabeled images: one pass on x + n, n = clip(N(0, 0.1^2), -0.2, 0.2).
* Uncertainty: ``mc_passes`` = 8 teacher passes, each with fresh noise and dropout; u = entropy of
  the mean softmax (nats).
* Consistency: per voxel squared difference of student and teacher softmax, summed over classes,
  kept where u < H_t, H_t = (3/4 + 1/4 * r(t)) * ln(K) with r the Gaussian ramp over the run (the
  reference code's threshold; the paper writes it with ln 2 for K = 2). Loss = sum(mask * d) /
  (2 * sum(mask) + 1e-16) over unlabeled voxels, as the reference code.
* lambda(t) = ``consistency`` (0.1) * r(t / (``consistency_rampup`` x iterations)): the reference code
  ramps over 40 "epochs" of 150 iterations, i.e. its whole 6000-iteration run -> rampup 1.0.
* Supervised: 0.5 (CE + Dice) on labeled images. The SDM head (which UA-MT lacks) is trained with
  ``sdm_weight`` (default 0.3) so the product can still display a distance map; set 0 for the
  paper's UA-MT exactly.
"""

from __future__ import annotations

import copy
import math

import torch

from ..losses import masked_consistency_loss
from .base import OptimizerStep, StepOutput, register
from .copy_paste import ema_update
from .supervised import Supervised


@register("uamt")
class UAMT(Supervised):
    uses_unlabeled = True
    defaults = {
        "seg_loss": "dice_ce",
        "sdm_weight": 0.3,
        "consistency": 0.1,
        "consistency_rampup": 1.0,
        "ema_decay": 0.99,
        "mc_passes": 8,
        "noise_std": 0.1,
        "noise_clip": 0.2,
    }

    def __init__(self, config: dict):
        super().__init__(config)
        self.teacher = copy.deepcopy(self.model)
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def _noisy(self, x: torch.Tensor) -> torch.Tensor:
        c = float(self.config["noise_clip"])
        return x + torch.clamp(torch.randn_like(x) * float(self.config["noise_std"]), -c, c)

    def ramp(self, iteration: int) -> float:
        return self.ramped(1.0, iteration, self.config["consistency_rampup"])

    def training_step(self, batch, iteration):
        n = int(batch["n_labeled"])
        image = batch["image"]
        out = self.model(image)
        sup, logs = self.supervised_losses(out, batch, n)
        unlabeled = image[n:]
        self.teacher.train()
        with torch.no_grad():
            target = torch.softmax(self.teacher(self._noisy(unlabeled))["seg"], dim=1)
            passes = int(self.config["mc_passes"])
            mean = (
                sum(torch.softmax(self.teacher(self._noisy(unlabeled))["seg"], dim=1) for _ in range(passes)) / passes
            )
            uncertainty = -(mean * torch.log(mean + 1e-6)).sum(dim=1)  # (B_u, X, Y, Z) nats
            k = target.shape[1]
            threshold = (0.75 + 0.25 * self.ramp(iteration)) * math.log(k)
            mask = (uncertainty < threshold).float()
        consistency = masked_consistency_loss(torch.softmax(out["seg"][n:], dim=1), target, mask)
        lam = self.consistency_weight(iteration)
        loss = sup + lam * consistency
        logs.update(
            loss=float(loss.detach()),
            loss_consistency=float(consistency.detach()),
            consistency_weight=lam,
            certain_fraction=float(mask.mean()),
            uncertainty_threshold=threshold,
        )
        return StepOutput((OptimizerStep("model", loss),), logs)

    def after_step(self, iteration: int) -> None:
        """EMA of the student's parameters into the teacher (``iteration`` completed steps)."""
        ema_update(self.teacher, self.model, iteration, float(self.config["ema_decay"]))
