"""MTCTL (paper 000, 3D left atrium) and BMT-CTL (paper 001, 2D cine): multi-task cross-task learning.

One network, a shared encoder with one decoder per task (``sdm_decoder = "separate"``): f1 = the
segmentation softmax, f2 = the tanh SDM (negative inside, see ``losses.cross_task``). Per step,
with the first ``n`` batch rows labeled:

* L_dice (labeled): soft Dice of f1 (paper 000 "Dice Loss"); ``seg_loss`` may select 0.5 (CE + Dice).
* L_dis (labeled): MSE(f2, SDM of the label), weight ``sdm_weight`` = 0.3 (DTC's beta; the paper
  gives none).
* L_cross-task (all rows): mean (f1 - sigmoid(-k f2))^2 over voxels and structures, k = 1500.
* L_G (all rows): the same squared error averaged only where U(x) < t. U comes from
  ``mc_passes`` forward passes with dropout on, without gradient (encoder once, decoders sampled when
  the encoder has no dropout):
  - MTCTL: U = the mean over the N samples of the softmax entropy (nats), "the mean entropy over
    all N samples"; N = 8 and t = (3/4 + 1/4 r(t)) ln K with r the run's Gaussian ramp, the
    uncertainty filter of UA-MT's reference code (paper 000 builds on it and gives no N or t).
  - BMT-CTL: U = the mean over classes of the standard deviation of the N softmax samples
    (Eq. 2 of paper 001), N = 10, dropout q = 0.1; t ramps from 0.075 to 0.125 (a fraction 0.15 ->
    0.25 of 0.5, the largest standard deviation a probability can have; the paper gives no t).
* L_adv-GM (unlabeled): Eq. (1) of paper 000, beta = 0.5 (``losses.cross_task``); the
  discriminator (SASSNet's, 2D for cine) sees the SDM and the image; its own step uses detached SDMs,
  so it never moves the segmenter, and the segmenter's adversarial term reaches only the segmenter's
  optimizer (the Trainer zeroes D's gradients before D's step).

Total for the segmenter: L_dice + 0.3 L_dis + lambda(t) (L_cross-task + L_G) + gamma(t) L_adv-GM with
lambda(t) = ``consistency`` (1.0, DTC's reference weight for the same cross-task term) times the
Gaussian ramp over the run, gamma(t) = ``adv_weight`` (0.001, SASSNet's) times the same ramp.
The papers do not state how the terms are weighted; these are the cited reference codes' values.
BMT-CTL's Brier score (Eq. 3 of 001) is a calibration *measure*: ``metrics.brier_score`` reports it
per class in evaluation; it is not a training term here.
"""

from __future__ import annotations

import math

import torch

from ..losses import adv_gm_discriminator_loss, adv_gm_generator_loss, cross_task_loss, guidance_loss
from ..sdm import sdm_to_probability
from .adversarial import WithSDMDiscriminator
from .base import OptimizerStep, StepOutput, register


def mc_softmax_samples(model: torch.nn.Module, image: torch.Tensor, passes: int) -> torch.Tensor:
    """(N, B, K, ...) softmax samples of ``model`` in its current mode (dropout on in training), no gradient."""
    with torch.no_grad():
        feats = model.encode(image)
        return torch.stack([torch.softmax(model.decode(feats, seg_only=True)["seg"], dim=1) for _ in range(passes)])


def mean_sample_entropy(samples: torch.Tensor) -> torch.Tensor:
    """(N, B, K, ...) -> (B, ...) mean over samples of the entropy in nats."""
    return -(samples * torch.log(samples.clamp_min(1e-12))).sum(dim=2).mean(dim=0)


def mean_class_std(samples: torch.Tensor) -> torch.Tensor:
    """(N, B, K, ...) -> (B, ...) standard deviation over samples, averaged over classes (BMT-CTL Eq. 2)."""
    return samples.std(dim=0, unbiased=False).mean(dim=1)


@register("mtctl")
class MTCTL(WithSDMDiscriminator):
    uses_unlabeled = True
    discriminator_dims = 3
    defaults = {
        "seg_loss": "dice",
        "sdm_weight": 0.3,
        "k": 1500.0,
        "consistency": 1.0,
        "consistency_rampup": 1.0,
        "mc_passes": 8,
        "uncertainty": "entropy",
        "guidance_threshold": [0.75, 1.0],
        "adv_weight": 0.001,
        "adv_rampup": 1.0,
        "gm_beta": 0.5,
        "disc_filters": 64,
    }

    def __init__(self, config: dict):
        config = dict(config)
        config["network"] = {"sdm_decoder": "separate", **config.get("network", {})}
        super().__init__(config)

    def uncertainty_threshold(self, iteration: int, num_classes: int) -> float:
        lo, hi = (float(v) for v in self.config["guidance_threshold"])
        top = math.log(num_classes) if self.config["uncertainty"] == "entropy" else 0.5
        return (lo + (hi - lo) * self.ramped(1.0, iteration, self.config["consistency_rampup"])) * top

    def uncertainty(self, image: torch.Tensor) -> torch.Tensor:
        samples = mc_softmax_samples(self.model, image, int(self.config["mc_passes"]))
        kind = self.config["uncertainty"]
        if kind == "entropy":
            return mean_sample_entropy(samples)
        if kind == "std":
            return mean_class_std(samples)
        raise ValueError(f"unknown uncertainty '{kind}' (entropy | std)")

    def training_step(self, batch, iteration):
        n = int(batch["n_labeled"])
        image = batch["image"]
        out = self.model(image)
        sup, logs = self.supervised_losses(out, batch, n)
        seg_fg = torch.softmax(out["seg"], dim=1)[:, 1:]
        sdm_fg = sdm_to_probability(out["sdm"], float(self.config["k"]))
        cross = cross_task_loss(seg_fg, sdm_fg)
        t = self.uncertainty_threshold(iteration, out["seg"].shape[1])
        if float(self.config["consistency"]) == 0.0:
            # the control without the cross-task terms: L_G is weighted 0, so its N dropout
            # passes are skipped (they draw no gradient; only the time and the random stream differ)
            certain = torch.zeros((), dtype=torch.bool)
            guide = (seg_fg * 0.0).sum()
        else:
            certain = self.uncertainty(image) < t
            guide = guidance_loss(seg_fg, sdm_fg, certain)
        lam = self.consistency_weight(iteration)
        gamma = self.ramped(self.config["adv_weight"], iteration, self.config["adv_rampup"])
        beta = float(self.config["gm_beta"])
        adv = adv_gm_generator_loss(self.discriminator(out["sdm"][n:], image[n:]), beta)
        loss = sup + lam * (cross + guide) + gamma * adv
        d_loss = adv_gm_discriminator_loss(
            self.discriminator(out["sdm"][:n].detach(), image[:n]),
            self.discriminator(out["sdm"][n:].detach(), image[n:]),
            beta,
        )
        logs.update(
            loss=float(loss.detach()),
            loss_cross_task=float(cross.detach()),
            loss_guidance=float(guide.detach()),
            loss_adv=float(adv.detach()),
            loss_disc=float(d_loss.detach()),
            consistency_weight=lam,
            adv_weight=gamma,
            certain_fraction=float(certain.float().mean()),
            uncertainty_threshold=t,
        )
        return StepOutput((OptimizerStep("model", loss), OptimizerStep("discriminator", d_loss)), logs)


@register("bmtctl")
class BMTCTL(MTCTL):
    """BMT-CTL (paper 001): MTCTL's losses on a 2D U-Net with dropout q = 0.1 after every block;
    uncertainty = mean class standard deviation over N = 10 MC-dropout samples."""

    discriminator_dims = 2
    defaults = {**MTCTL.defaults, "mc_passes": 10, "uncertainty": "std", "guidance_threshold": [0.15, 0.25]}
