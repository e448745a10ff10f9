"""Losses: segmentation (Dice, Dice+CE), SDM regression, adversarial."""

from .adversarial import discriminator_loss, generator_loss
from .dice import dice_ce_loss, segmentation_loss, soft_dice_loss

__all__ = ["soft_dice_loss", "dice_ce_loss", "segmentation_loss", "discriminator_loss", "generator_loss"]
