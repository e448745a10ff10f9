"""Batch norm folded into the convolution before it, for inference.

In eval mode a BatchNorm layer is a per-channel affine map, y = s * (x - mean) + beta with
s = gamma / sqrt(var + eps); after a convolution (weight W, bias b) the pair is one convolution with
W' = s W (per output channel) and b' = s (b - mean) + beta. Inference then skips one full pass over
every feature map per layer. Exact up to float rounding; training-mode statistics are not kept.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

_CONVS = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)


@torch.no_grad()
def _fold_pair(conv: nn.Module, bn: nn.Module) -> None:
    """Fold ``bn`` (eval statistics) into ``conv`` in place."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1.0 / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    out_dim = 1 if isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d)) else 0
    shape = [1] * conv.weight.dim()
    shape[out_dim] = -1
    if out_dim == 1 and conv.groups != 1:
        raise ValueError("grouped transposed convolutions are not folded")
    conv.weight.mul_(scale.reshape(shape).to(conv.weight.dtype))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale + shift
    conv.bias = nn.Parameter(new_bias.to(conv.weight.dtype))


def _foldable_pairs(model: nn.Module) -> list[tuple[nn.Sequential, str, str]]:
    """(Sequential, conv name, BatchNorm name) for every BatchNorm directly after a convolution."""
    pairs = []
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            names = list(seq._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = seq._modules[a], seq._modules[b]
                if isinstance(conv, _CONVS) and isinstance(bn, _NORMS) and bn.track_running_stats:
                    pairs.append((seq, a, b))
    return pairs


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm that directly follows a convolution in an
    ``nn.Sequential`` folded into it (and replaced by ``nn.Identity``); ``model`` is not changed.
    With nothing to fold (a network without batch norm, or one folded already) ``model`` itself.
    Dropout layers are kept (MC dropout works on the copy as on the original)."""
    if not _foldable_pairs(model):
        return model
    folded = copy.deepcopy(model).eval()
    for seq, a, b in _foldable_pairs(folded):
        _fold_pair(seq._modules[a], seq._modules[b])
        seq._modules[b] = nn.Identity()
    return folded
