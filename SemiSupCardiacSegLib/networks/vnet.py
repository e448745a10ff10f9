"""V-Net (Milletari et al. 2016) as used by UA-MT / SASSNet / DTC, with a segmentation head and an SDM head.

Structure (reference code behaviour, written anew): five resolution levels with 1, 2, 3, 3, 3
3x3x3 conv-norm-ReLU layers, residual-free stages, stride-2 2x2x2 convolutions down and stride-2
2x2x2 transposed convolutions up, skip connections by *addition*. Width ``n_filters`` at level 1,
doubled per level (16 in the papers).

Dropout (``nn.Dropout3d``, rate ``dropout``) sits where the reference places it: on the bottleneck
features and on the last decoder features before the heads. Both are after the encoder, so MC
dropout can run the encoder once and sample only the decoder (``decode``), which is what
``inference.model_space`` does. Head-only MC (``mc_scope = "head"`` there) samples only
the last dropout: ``decode_trunk`` once with dropout off, then ``decode_heads`` per sample. Dropout
is active in training, and at inference only when MC sampling asks for it (``set_mc_dropout``);
normalization layers stay in eval mode.

Heads: ``seg`` = 1x1x1 conv to ``num_classes`` logits (softmax over classes, background = 0);
``sdm`` = 1x1x1 conv to ``num_classes - 1`` channels followed by tanh (SASSNet: "a 3D convolution
block followed by the tanh activation"), one normalized SDM per foreground class.

``sdm_decoder = "separate"`` (MTCTL, paper 000: one shared encoder, one decoder per task) gives the
SDM head its own decoder (``sdm_branch``, same layers as the segmentation decoder, its own weights);
the default ``"shared"`` reads the segmentation decoder's last features (SASSNet/DTC).

Input spatial size must be divisible by 16 (four down-samplings); the sliding window guarantees it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


def norm_layer(kind: str, channels: int) -> nn.Module:
    """'batch' | 'instance' | 'group' (8 groups or fewer) | 'none'."""
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalization '{kind}'")


class ConvStage(nn.Sequential):
    """``n`` x (3x3x3 conv -> norm -> ReLU)."""

    def __init__(self, n: int, cin: int, cout: int, norm: str):
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [
                nn.Conv3d(cin if i == 0 else cout, cout, 3, padding=1),
                norm_layer(norm, cout),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class Down(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__(nn.Conv3d(cin, cout, 2, stride=2), norm_layer(norm, cout), nn.ReLU(inplace=True))


class Up(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__(nn.ConvTranspose3d(cin, cout, 2, stride=2), norm_layer(norm, cout), nn.ReLU(inplace=True))


@dataclass(frozen=True)
class VNetConfig:
    """Architecture hyper-parameters; stored in checkpoints so a model can be rebuilt."""

    in_channels: int = 1
    num_classes: int = 2
    n_filters: int = 16
    normalization: str = "batch"
    dropout: float = 0.5
    sdm_head: bool = True
    sdm_decoder: str = "shared"  # "shared" | "separate"

    def to_dict(self) -> dict:
        return asdict(self)


def add_decoder_layers(m: nn.Module, f: int, norm: str, dropout: float) -> None:
    """Register the decoder stages on ``m`` under the names ``run_decoder`` uses (the VNet itself
    keeps them at top level, so the shipped checkpoints' weight names stay valid)."""
    m.up5 = Up(16 * f, 8 * f, norm)
    m.dec4 = ConvStage(3, 8 * f, 8 * f, norm)
    m.up4 = Up(8 * f, 4 * f, norm)
    m.dec3 = ConvStage(3, 4 * f, 4 * f, norm)
    m.up3 = Up(4 * f, 2 * f, norm)
    m.dec2 = ConvStage(2, 2 * f, 2 * f, norm)
    m.up2 = Up(2 * f, f, norm)
    m.dec1 = ConvStage(1, f, f, norm)
    m.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()


class VNetDecoder(nn.Module):
    """The V-Net decoder stages (up-convolutions, additive skips, conv stages, dropout)."""

    def __init__(self, f: int, norm: str, dropout: float):
        super().__init__()
        add_decoder_layers(self, f, norm, dropout)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return run_decoder(self, feats)


def run_decoder(m: nn.Module, feats: list[torch.Tensor], final_dropout: bool = True) -> torch.Tensor:
    """Decoder stages of ``m`` (a VNet or VNetDecoder) on encoder features -> (B, f, X, Y, Z);
    final_dropout False leaves out the dropout before the heads (``VNet.decode_trunk``)."""
    x1, x2, x3, x4, x5 = feats
    x = m.dropout(x5)
    x = m.dec4(m.up5(x) + x4)
    x = m.dec3(m.up4(x) + x3)
    x = m.dec2(m.up3(x) + x2)
    x = m.dec1(m.up2(x) + x1)
    return m.dropout(x) if final_dropout else x


class VNet(nn.Module):
    """V-Net with seg and SDM heads. forward(x: (B, C_in, X, Y, Z)) -> {'seg': logits, 'sdm': tanh}."""

    def __init__(self, config: VNetConfig = VNetConfig()):
        super().__init__()
        self.config = config
        f, norm = config.n_filters, config.normalization
        self.enc1 = ConvStage(1, config.in_channels, f, norm)
        self.down1 = Down(f, 2 * f, norm)
        self.enc2 = ConvStage(2, 2 * f, 2 * f, norm)
        self.down2 = Down(2 * f, 4 * f, norm)
        self.enc3 = ConvStage(3, 4 * f, 4 * f, norm)
        self.down3 = Down(4 * f, 8 * f, norm)
        self.enc4 = ConvStage(3, 8 * f, 8 * f, norm)
        self.down4 = Down(8 * f, 16 * f, norm)
        self.enc5 = ConvStage(3, 16 * f, 16 * f, norm)
        add_decoder_layers(self, f, norm, config.dropout)
        self.seg_head = nn.Conv3d(f, config.num_classes, 1)
        self.sdm_head = nn.Conv3d(f, config.num_classes - 1, 1) if config.sdm_head else None
        if config.sdm_decoder not in ("shared", "separate"):
            raise ValueError(f"sdm_decoder must be 'shared' or 'separate', got '{config.sdm_decoder}'")
        self.sdm_branch = (
            VNetDecoder(f, norm, config.dropout) if config.sdm_head and config.sdm_decoder == "separate" else None
        )

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, C_in, X, Y, Z), X, Y, Z divisible by 16 -> features of the five levels."""
        x1 = self.enc1(x)
        x2 = self.enc2(self.down1(x1))
        x3 = self.enc3(self.down2(x2))
        x4 = self.enc4(self.down3(x3))
        x5 = self.enc5(self.down4(x4))
        return [x1, x2, x3, x4, x5]

    def decode(self, feats: list[torch.Tensor], seg_only: bool = False) -> dict[str, torch.Tensor]:
        """Features -> {'seg': (B, K, X, Y, Z) logits, 'sdm': (B, K-1, X, Y, Z) in [-1, 1]}; seg_only: no 'sdm'."""
        x = run_decoder(self, feats)
        xs = None
        if self.sdm_head is not None and not seg_only:
            xs = self.sdm_branch(feats) if self.sdm_branch is not None else x
        return self._heads(x, xs)

    def decode_trunk(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The decoder up to, not including, its last dropout: (seg features (B, f, X, Y, Z), the
        separate SDM decoder's features or None). ``decode_heads(decode_trunk(f))`` is ``decode(f)``;
        head-only MC dropout runs the trunk once and samples only ``decode_heads``."""
        xs = run_decoder(self.sdm_branch, feats, final_dropout=False) if self.sdm_branch is not None else None
        return run_decoder(self, feats, final_dropout=False), xs

    def decode_heads(
        self, trunk: tuple[torch.Tensor, torch.Tensor | None], seg_only: bool = False
    ) -> dict[str, torch.Tensor]:
        """The last dropout and the 1x1x1 heads on ``decode_trunk``'s features -> the ``decode`` dict.

        With MC dropout on, the channel mask of ``Dropout3d`` (one Bernoulli(1 - p) draw per sample
        and channel, scaled by 1 / (1 - p)) is folded into the 1x1x1 head weights instead of being
        applied to the full-resolution features: the same distribution, without the (B, f, X, Y, Z)
        multiply, and the seg and SDM heads of a shared decoder read the features once."""
        x, xs = trunk
        if _sampling(self.dropout):
            return self._sampled_heads(x, xs, seg_only)
        x = self.dropout(x)
        if self.sdm_head is None or seg_only:
            xs = None
        else:
            xs = x if xs is None else self.sdm_branch.dropout(xs)
        return self._heads(x, xs)

    def _sampled_heads(self, x: torch.Tensor, xs: torch.Tensor | None, seg_only: bool) -> dict[str, torch.Tensor]:
        k = self.seg_head.out_channels
        with_sdm = self.sdm_head is not None and not seg_only
        mask = channel_mask(x, self.dropout.p)
        if with_sdm and xs is None:  # shared decoder: one convolution for both heads
            y = masked_pointwise_conv(
                x,
                mask,
                torch.cat([self.seg_head.weight, self.sdm_head.weight]),
                torch.cat([self.seg_head.bias, self.sdm_head.bias]),
            ).float()
            return {"seg": y[:, :k], "sdm": torch.tanh(y[:, k:])}
        out = {"seg": masked_pointwise_conv(x, mask, self.seg_head.weight, self.seg_head.bias).float()}
        if with_sdm:  # the separate SDM decoder has its own last dropout (same rate, built from the same config)
            ms = channel_mask(xs, self.sdm_branch.dropout.p)
            out["sdm"] = torch.tanh(masked_pointwise_conv(xs, ms, self.sdm_head.weight, self.sdm_head.bias).float())
        return out

    def _heads(self, x: torch.Tensor, xs: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Outputs float32 also under bf16 autocast (``training.precision``): the methods' transforms
        and losses read them in float32."""
        out = {"seg": self.seg_head(x).float()}
        if xs is not None:
            out["sdm"] = torch.tanh(self.sdm_head(xs).float())
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode(self.encode(x))


def _sampling(drop: nn.Module) -> bool:
    """True for a Dropout3d layer that is drawing masks (train mode, p > 0)."""
    return isinstance(drop, nn.Dropout3d) and drop.training and drop.p > 0


def channel_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """A ``Dropout3d`` mask for x (B, C, ...): (B, C), each entry 0 with probability p, else 1 / (1 - p)."""
    keep = torch.full(x.shape[:2], 1.0 - p, dtype=x.dtype, device=x.device)
    return torch.bernoulli(keep) / (1.0 - p)


def masked_pointwise_conv(
    x: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``conv3d(x * mask[:, :, None, None, None], weight, bias)`` for a 1x1x1 ``weight`` (K, C, 1, 1, 1),
    computed as one grouped convolution with per-sample weights W * mask[b] (x: (B, C, X, Y, Z) -> (B, K, X, Y, Z))."""
    b, c = x.shape[:2]
    w = weight.reshape(weight.shape[0], c)
    per_sample = (w[None] * mask[:, None, :]).reshape(b * w.shape[0], c, 1, 1, 1)
    y = nn.functional.conv3d(
        x.reshape(1, b * c, *x.shape[2:]), per_sample, None if bias is None else bias.repeat(b), groups=b
    )
    return y.reshape(b, w.shape[0], *x.shape[2:])


def set_mc_dropout(model: nn.Module, enabled: bool) -> None:
    """Put only the dropout layers in train mode (MC sampling) or back in eval mode."""
    for m in model.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Dropout3d)):
            m.train(enabled)
