"""SASSNet (Li, Zhang, He, MICCAI 2020; paper 004): shape-aware adversarial semi-supervised learning.

Equations implemented (paper numbering):
* (2)-(3) supervised loss on labeled images: L_s = L_seg + alpha * L_sdm, with L_seg the soft Dice
  of the foreground probability (reference code: Dice only) and L_sdm the MSE between the tanh SDM
  head and the normalized SDM of the label (``sdm.signed_distance_map``); alpha = 0.3.
* (5) segmenter update with the discriminator fixed: min L_s - beta/M sum_m log D(X_m, S_m), the
  non-saturating surrogate on unlabeled images only (the labeled term is dropped, as in the paper).
* discriminator update with the segmenter fixed: BCE, labeled SDMs -> 1, unlabeled -> 0, on
  *detached* SDMs, so this step never changes the segmenter.
* beta(t) = 0.001 * exp(-5 (1 - t / t_max)^2), the Gaussian warm-up of Sec. 3, with t_max the
  number of training iterations (``adv_rampup`` as a fraction of them; 1.0 = paper).

Choices the paper leaves open, taken from its reference code's behaviour: D sees the SDM of every
foreground class and the image, each through its own first conv, fused by addition
(``networks.discriminator``); D is trained with Adam (lr 1e-4, betas (0.9, 0.99)), the segmenter
with SGD; in a batch the first rows are labeled (2 of 4).
On a 2D network (``arch`` 'unet2d', the cine counterpart of the accuracy table) D is the same
network built from 2D convolutions, scoring each slice, as BMT-CTL's.
"""

from __future__ import annotations

from ..losses import discriminator_loss, generator_loss
from .adversarial import WithSDMDiscriminator
from .base import OptimizerStep, StepOutput, register


@register("sassnet")
class SASSNet(WithSDMDiscriminator):
    uses_unlabeled = True
    defaults = {"seg_loss": "dice", "sdm_weight": 0.3, "adv_weight": 0.001, "adv_rampup": 1.0, "disc_filters": 64}

    def adversarial_weight(self, iteration: int) -> float:
        return self.ramped(self.config["adv_weight"], iteration, self.config["adv_rampup"])

    def training_step(self, batch, iteration):
        n = int(batch["n_labeled"])
        image = batch["image"]
        out = self.model(image)
        sup, logs = self.supervised_losses(out, batch, n)
        beta = self.adversarial_weight(iteration)
        sdm = out["sdm"]
        # Segmenter: make unlabeled SDMs look labeled to D (gradients reach D's params too, but the
        # Trainer zeroes D's gradients before D's own step).
        adv = generator_loss(self.discriminator(sdm[n:], image[n:]))
        loss = sup + beta * adv
        # Discriminator: on detached SDMs, so its step cannot move the segmenter.
        d_loss = discriminator_loss(
            self.discriminator(sdm[:n].detach(), image[:n]), self.discriminator(sdm[n:].detach(), image[n:])
        )
        logs.update(
            loss=float(loss.detach()), loss_adv=float(adv.detach()), adv_weight=beta, loss_disc=float(d_loss.detach())
        )
        return StepOutput((OptimizerStep("model", loss), OptimizerStep("discriminator", d_loss)), logs)
