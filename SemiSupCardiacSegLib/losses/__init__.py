"""Losses: segmentation (Dice, Dice+CE), SDM regression, adversarial."""

from .adversarial import discriminator_loss, generator_loss
from .cross_task import adv_gm_discriminator_loss, adv_gm_generator_loss, cross_task_loss, geman_mcclure, guidance_loss
from .dice import dice_ce_loss, segmentation_loss, soft_dice_loss

__all__ = [
    "cross_task_loss",
    "guidance_loss",
    "geman_mcclure",
    "adv_gm_discriminator_loss",
    "adv_gm_generator_loss",
    "soft_dice_loss",
    "dice_ce_loss",
    "segmentation_loss",
    "discriminator_loss",
    "generator_loss",
]
