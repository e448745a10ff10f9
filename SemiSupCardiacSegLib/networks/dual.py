"""A pair of V-Nets used as one network: segmentation from the first, SDM from the second (DTML).

DTML (paper 003) trains two networks of the same backbone: M_s (segmentation head only) and M_d
(regression head only). At inference the product shows both a mask and a distance map, so the
pair is exported as one module whose ``seg`` comes from M_s and ``sdm`` from M_d. ``encode`` /
``decode`` keep the interface of ``VNet`` (encoder once, decoder N times for MC dropout).
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from .vnet import VNet, VNetConfig


class DualTaskVNet(nn.Module):
    """seg_net: V-Net whose ``seg`` output is used; sdm_net: V-Net whose ``sdm`` output is used."""

    def __init__(self, config: VNetConfig):
        super().__init__()
        self.config = config
        self.seg_net = VNet(config)
        self.sdm_net = VNet(VNetConfig(**{**asdict(config), "sdm_head": True}))

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.seg_net.encode(x), self.sdm_net.encode(x)

    def decode(self, feats, seg_only: bool = False) -> dict[str, torch.Tensor]:
        """-> {'seg': (B, K, ...) logits of M_s, 'sdm': (B, K-1, ...) tanh SDM of M_d}; seg_only: no 'sdm'."""
        seg_feats, sdm_feats = feats
        if seg_only:
            return {"seg": self.seg_net.decode(seg_feats, seg_only=True)["seg"]}
        return {"seg": self.seg_net.decode(seg_feats)["seg"], "sdm": self.sdm_net.decode(sdm_feats)["sdm"]}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode(self.encode(x))
