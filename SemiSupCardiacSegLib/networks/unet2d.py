"""2D U-Net for short-axis cine slices, with dropout, a segmentation head and per-class SDM heads.

Structure (the U-Net of BMT-CTL (001) and of the SSL4MIS ACDC benchmarks, written anew): five
levels of widths ``n_filters`` x (1, 2, 4, 8, 16); each block is two (3x3 conv -> BatchNorm ->
LeakyReLU(0.01)); 2x2 max-pooling down; bilinear x2 up-sampling + 1x1 conv, concatenation with
the skip, then a block. BMT-CTL puts dropout "after every encoder and decoder block" with q = 0.1
(``dropout``; ``nn.Dropout2d``). Heads (1x1 convs): ``seg`` = K logits; ``sdm`` = K-1 channels, tanh
(one normalized SDM per structure, the SASSNet/DTC convention); with ``sdm_decoder = "separate"``
the SDM head gets its own decoder on the shared encoder (MTCTL/BMT-CTL: a shared encoder and one
decoder per task), with ``"shared"`` it reads the segmentation decoder's last features.
``area_head`` adds MTN's (002) regression path: it splits off at the last up-sampling (its own
last up-sampling block) and ends in global average pooling and a linear layer -> (B, 1), the
myocardial area as a fraction of the slice's pixels.

Volumes as stacks of slices: every method, the sliding window and MC dropout work on 5D tensors
(B, C, X, Y, Z). This network accepts those and treats each z-slice as an independent 2D image
((B, C, X, Y, Z) -> (B*Z, C, X, Y) -> back), so a cine model plugs into the 3D machinery with a
(S, S, 1) patch. 4D input (B, C, X, Y) works too. X and Y must be divisible by 16.

MC dropout: ``encode`` only reshapes when there is dropout in the encoder (every mask must be
re-drawn per sample, so ``decode`` runs the whole network); with ``dropout_encoder = False`` the
encoder runs once and only the decoders are sampled, as for the V-Net.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNet2DConfig:
    """Architecture hyper-parameters; stored in checkpoints so a model can be rebuilt."""

    in_channels: int = 1
    num_classes: int = 4
    n_filters: int = 16
    dropout: float = 0.1
    dropout_encoder: bool = True
    sdm_head: bool = True
    sdm_decoder: str = "shared"  # "shared" | "separate"
    area_head: bool = False
    normalization: str = "batch"  # kept for interface parity with VNetConfig (BatchNorm2d only)

    def to_dict(self) -> dict:
        return asdict(self)


class Block(nn.Sequential):
    """2 x (3x3 conv -> BatchNorm -> LeakyReLU)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.01, inplace=True),
        )


class UpBlock(nn.Module):
    """Bilinear x2 up-sampling, 1x1 conv to the skip's width, concatenation, Block."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.reduce = nn.Conv2d(cin, cskip, 1)
        self.block = Block(2 * cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.reduce(x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(torch.cat([skip, x], dim=1))


class Decoder(nn.Module):
    """Four UpBlocks with dropout after each; forward(feats) -> (last features, features before the last up)."""

    def __init__(self, widths: list[int], dropout: float):
        super().__init__()
        self.ups = nn.ModuleList([UpBlock(widths[i + 1], widths[i], widths[i]) for i in (3, 2, 1, 0)])
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = feats[4]
        before_last = x
        for up, skip in zip(self.ups, (feats[3], feats[2], feats[1], feats[0])):
            before_last = x
            x = self.drop(up(x, skip))
        return x, before_last


class UNet2D(nn.Module):
    """forward(x: (B, C, X, Y[, Z])) -> {'seg': (B, K, X, Y[, Z]), 'sdm': (B, K-1, ...) in [-1, 1],
    ['area': (B[, Z])]}."""

    def __init__(self, config: UNet2DConfig = UNet2DConfig()):
        super().__init__()
        if config.sdm_decoder not in ("shared", "separate"):
            raise ValueError(f"sdm_decoder must be 'shared' or 'separate', got '{config.sdm_decoder}'")
        self.config = config
        f = config.n_filters
        w = [f, 2 * f, 4 * f, 8 * f, 16 * f]
        self.widths = w
        self.enc = nn.ModuleList([Block(config.in_channels, w[0])] + [Block(w[i - 1], w[i]) for i in range(1, 5)])
        self.enc_drop = nn.Dropout2d(config.dropout) if config.dropout > 0 and config.dropout_encoder else nn.Identity()
        self.seg_decoder = Decoder(w, config.dropout)
        self.seg_head = nn.Conv2d(w[0], config.num_classes, 1)
        self.sdm_decoder = Decoder(w, config.dropout) if config.sdm_head and config.sdm_decoder == "separate" else None
        self.sdm_head = nn.Conv2d(w[0], config.num_classes - 1, 1) if config.sdm_head else None
        if config.area_head:
            self.area_up = UpBlock(w[1], w[0], w[0])
            self.area_fc = nn.Linear(w[0], 1)
        else:
            self.area_up = self.area_fc = None

    # ------------------------------------------------------------------ slices <-> volumes
    @staticmethod
    def _to_slices(x: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
        if x.ndim == 4:
            return x, None
        if x.ndim != 5:
            raise ValueError(f"UNet2D expects (B, C, X, Y) or (B, C, X, Y, Z), got shape {tuple(x.shape)}")
        b, c, X, Y, Z = x.shape
        return x.permute(0, 4, 1, 2, 3).reshape(b * Z, c, X, Y), (b, Z)

    @staticmethod
    def _to_volume(y: torch.Tensor, shape: tuple | None) -> torch.Tensor:
        if shape is None:
            return y
        b, Z = shape
        if y.ndim == 1:  # (B*Z,) area
            return y.reshape(b, Z)
        return y.reshape(b, Z, *y.shape[1:]).permute(0, 2, 3, 4, 1)

    def _encode_slices(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, block in enumerate(self.enc):
            x = self.enc_drop(block(x if i == 0 else F.max_pool2d(x, 2)))
            feats.append(x)
        return feats

    def _decode_slices(self, feats: list[torch.Tensor], seg_only: bool = False) -> dict[str, torch.Tensor]:
        x, before_last = self.seg_decoder(feats)
        out = {"seg": self.seg_head(x).float()}  # float32 also under bf16 autocast (training.precision)
        if seg_only:
            return out
        if self.sdm_head is not None:
            xs = self.sdm_decoder(feats)[0] if self.sdm_decoder is not None else x
            out["sdm"] = torch.tanh(self.sdm_head(xs).float())
        if self.area_up is not None:
            a = self.seg_decoder.drop(self.area_up(before_last, feats[0]))
            out["area"] = self.area_fc(a.mean(dim=(2, 3))).float().squeeze(1)
        return out

    # ------------------------------------------------------------------ public interface
    def encode(self, x: torch.Tensor):
        """-> opaque features for ``decode`` (the input itself when the encoder holds dropout)."""
        xs, shape = self._to_slices(x)
        if isinstance(self.enc_drop, nn.Dropout2d):
            return ("input", xs, shape)
        return ("features", self._encode_slices(xs), shape)

    def decode(self, encoded, seg_only: bool = False) -> dict[str, torch.Tensor]:
        """seg_only: skip the SDM and area outputs (MC-dropout uncertainty needs only 'seg')."""
        kind, data, shape = encoded
        feats = self._encode_slices(data) if kind == "input" else data
        out = self._decode_slices(feats, seg_only)
        return {k: self._to_volume(v, shape) for k, v in out.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode(self.encode(x))
