"""Batch norm folded into the convolutions (networks/fold.py): same outputs, original untouched."""

from __future__ import annotations

import torch
from torch import nn

from SemiSupCardiacSegLib.networks import UNet2D, UNet2DConfig, VNet, VNetConfig, set_mc_dropout
from SemiSupCardiacSegLib.networks.fold import fold_batchnorm


def _with_statistics(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (a fresh layer has mean 0, var 1)."""
    torch.manual_seed(1)
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            m.momentum = None  # cumulative average over the batches below
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.3, 0.3)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(x * 2.0 + 0.5)
    return net.eval()


def test_a_folded_vnet_gives_the_same_outputs_and_leaves_the_original_alone():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 32, 32, 16)
    net = _with_statistics(VNet(VNetConfig(n_filters=4, sdm_decoder="separate")), x)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm3d) for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with torch.inference_mode():
        a, b = net(x), folded(x)
    for k in ("seg", "sdm"):
        assert torch.allclose(a[k], b[k], atol=1e-4, rtol=1e-4), (k, float((a[k] - b[k]).abs().max()))


def test_mc_dropout_on_a_folded_network_draws_the_same_masks():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 32, 32, 16)
    net = _with_statistics(VNet(VNetConfig(n_filters=4)), x)
    folded = fold_batchnorm(net)
    outs = []
    for model in (net, folded):
        set_mc_dropout(model, True)
        torch.manual_seed(5)
        with torch.inference_mode():
            outs.append(model(x)["seg"])
        set_mc_dropout(model, False)
    assert torch.allclose(outs[0], outs[1], atol=1e-4, rtol=1e-4)


def test_a_folded_unet2d_gives_the_same_outputs():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 64, 64)
    net = _with_statistics(UNet2D(UNet2DConfig(in_channels=1, num_classes=4, n_filters=4)), x)
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.inference_mode():
        a, b = net(x), folded(x)
    assert torch.allclose(a["seg"], b["seg"], atol=1e-4, rtol=1e-4)


def test_a_folded_network_is_not_copied_again():
    net = VNet(VNetConfig(n_filters=4)).eval()
    folded = fold_batchnorm(net)
    assert folded is not net and fold_batchnorm(folded) is folded
