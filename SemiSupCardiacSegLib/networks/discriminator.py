"""SASSNet's discriminator: tells SDMs predicted on labeled images from those on unlabeled ones.

Paper (004, Sec. 2.3 and 3): "5 convolution layers followed by an MLP", 4x4x4 kernels with stride
2, taking the SDM and the input volume and fusing them. Reference code behaviour followed here:
the SDM and the image each go through their own first stride-2 conv and the two feature maps are
*added*; then three more stride-2 convs (width doubling from ``ndf`` to ``8 ndf``; five convs in
all, as in the paper) with LeakyReLU(0.2), global average pooling and a small MLP. We output one
logit ("is labeled") and train with binary cross-entropy with logits, which is the two-way softmax
cross-entropy of the reference written with one output instead of two.

``spatial_dims = 2`` builds the same network from 2D convolutions for cine models (BMT-CTL); it
takes (B, C, X, Y) or, like ``UNet2D``, (B, C, X, Y, Z) stacks whose z-slices it scores one by one
((B*Z,) logits; training crops have Z = 1).
"""

from __future__ import annotations

import torch
from torch import nn


class SDMDiscriminator(nn.Module):
    """forward(sdm: (B, K-1, X, Y, Z), image: (B, C_in, X, Y, Z)) -> (B,) logits."""

    def __init__(
        self, sdm_channels: int = 1, image_channels: int = 1, ndf: int = 64, dropout: float = 0.5, spatial_dims: int = 3
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims = spatial_dims
        Conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.sdm_conv = Conv(sdm_channels, ndf, 4, stride=2, padding=1)
        self.image_conv = Conv(image_channels, ndf, 4, stride=2, padding=1)
        layers: list[nn.Module] = [nn.LeakyReLU(0.2, inplace=True)]
        width = ndf
        for _ in range(3):
            layers += [Conv(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            width *= 2
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool3d(1) if spatial_dims == 3 else nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(
            nn.Linear(width, width // 2), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(dropout), nn.Linear(width // 2, 1)
        )

    def forward(self, sdm: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if self.spatial_dims == 2 and sdm.ndim == 5:  # stacks of slices -> batch of slices
            sdm = sdm.permute(0, 4, 1, 2, 3).flatten(0, 1)
            image = image.permute(0, 4, 1, 2, 3).flatten(0, 1)
        x = self.body(self.sdm_conv(sdm) + self.image_conv(image))
        return self.mlp(self.pool(x).flatten(1)).float().squeeze(1)  # float32 also under bf16 autocast
