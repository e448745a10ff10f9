"""Networks, built from a config dict stored in every checkpoint (``build_network``)."""

from __future__ import annotations

from torch import nn

from .discriminator import SDMDiscriminator
from .dual import DualTaskVNet
from .unet2d import UNet2D, UNet2DConfig
from .vnet import VNet, VNetConfig, set_mc_dropout

ARCHITECTURES = {"vnet": (VNet, VNetConfig), "dual_vnet": (DualTaskVNet, VNetConfig), "unet2d": (UNet2D, UNet2DConfig)}


def build_network(arch: str, params: dict) -> nn.Module:
    """Build a registered architecture from its name and config dict."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture '{arch}'; known: {sorted(ARCHITECTURES)}")
    cls, cfg_cls = ARCHITECTURES[arch]
    return cls(cfg_cls(**params))


__all__ = [
    "VNet",
    "UNet2D",
    "UNet2DConfig",
    "DualTaskVNet",
    "VNetConfig",
    "SDMDiscriminator",
    "set_mc_dropout",
    "build_network",
    "ARCHITECTURES",
]
