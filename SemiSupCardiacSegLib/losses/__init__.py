"""Losses of every method: segmentation (Dice, Dice+CE), SDM regression and dual-task terms,
mean-teacher consistency, cross-task and adversarial, MTN's multi-task weighting."""

from .adversarial import discriminator_loss, generator_loss
from .cross_task import adv_gm_discriminator_loss, adv_gm_generator_loss, cross_task_loss, geman_mcclure, guidance_loss
from .dice import dice_ce_loss, segmentation_loss, soft_dice_loss
from .mean_teacher import masked_consistency_loss
from .multitask import area_regression_loss, uncertainty_weighted_loss
from .sdm import dual_task_consistency_loss, sdm_mask_dice_loss, sdm_regression_loss

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
    "masked_consistency_loss",
    "area_regression_loss",
    "uncertainty_weighted_loss",
    "dual_task_consistency_loss",
    "sdm_mask_dice_loss",
    "sdm_regression_loss",
]
