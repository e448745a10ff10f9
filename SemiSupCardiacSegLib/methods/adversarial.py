"""The SDM discriminator shared by SASSNet, MTCTL and BMT-CTL: built once here, stepped by its own optimizer.

D (``networks.SDMDiscriminator``) sees the SDM of every foreground class and the image and gives one
"is labeled" score per sample (per slice on a 2D network). Its optimizer is named 'discriminator'
(config ``optim.discriminator``); the methods' ``training_step`` returns the segmenter's step
first, then D's, on detached SDMs, so D's step never moves the segmenter.
"""

from __future__ import annotations

from torch import nn

from ..networks import SDMDiscriminator
from .supervised import Supervised


class WithSDMDiscriminator(Supervised):
    """A supervised-loss method with an SDM discriminator ``self.discriminator``.

    ``discriminator_dims``: 2 or 3, D's convolutions; None takes the network's (2 for 'unet2d').
    Method parameter ``disc_filters``: D's width.
    """

    discriminator_dims: int | None = None

    def __init__(self, config: dict):
        super().__init__(config)
        k = int(self.network_params.get("num_classes", 2))
        dims = self.discriminator_dims or (2 if self.arch == "unet2d" else 3)
        self.discriminator = SDMDiscriminator(
            k - 1, int(self.network_params.get("in_channels", 1)), int(self.config["disc_filters"]), spatial_dims=dims
        )

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"model": list(self.model.parameters()), "discriminator": list(self.discriminator.parameters())}
