"""Flip test-time augmentation: the flip group, equivariance, and how MC passes are shared out."""

import numpy as np
import pytest
import torch

from SemiSupCardiacSegLib.inference import (
    MC_GATE_SAMPLES,
    flip_sets,
    model_flip_axes,
    predict_model_space,
    sliding_window_predict,
)
from SemiSupCardiacSegLib.networks import build_network

NET = {"in_channels": 1, "num_classes": 2, "n_filters": 4, "dropout": 0.5}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = build_network("vnet", NET)
    # A few random BatchNorm statistics so the network is far from symmetric.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_flip_sets_are_the_group_identity_first():
    assert flip_sets([]) == [()]
    assert flip_sets([1, 0]) == [(), (0,), (1,), (0, 1)]
    assert model_flip_axes({"inference": {"tta_flip_axes": [0, 1]}}) == [0, 1] and model_flip_axes({}) == []


def test_tta_output_is_flip_equivariant_and_plain_output_is_not(net):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 32, 16)).astype(np.float32)  # one window: no window-grid asymmetry
    patch = (32, 32, 16)
    tta = predict_model_space(net, x, patch, flip_axes=(0, 1))
    tta_f = predict_model_space(net, np.ascontiguousarray(x[::-1]), patch, flip_axes=(0, 1))
    assert np.allclose(tta_f.probs, tta.probs[:, ::-1], atol=1e-5)
    assert np.allclose(tta_f.sdm, tta.sdm[:, ::-1], atol=1e-5)
    assert np.allclose(tta_f.entropy, tta.entropy[::-1], atol=1e-5)
    plain = sliding_window_predict(net, x, patch)
    plain_f = sliding_window_predict(net, np.ascontiguousarray(x[::-1]), patch)
    assert not np.allclose(plain_f.probs, plain.probs[:, ::-1], atol=1e-3)
    # TTA = the mean of the four flipped-back plain predictions.
    outs = []
    for axes in flip_sets((0, 1)):
        o = sliding_window_predict(net, np.ascontiguousarray(np.flip(x, axes)), patch)
        outs.append(np.flip(o.probs, tuple(a + 1 for a in axes)))
    assert np.allclose(tta.probs, np.mean(outs, axis=0), atol=1e-6)
    # Without dropout, MI is the flips' disagreement: >= 0 and positive somewhere.
    assert tta.mutual_info.min() >= 0 and tta.mutual_info.max() > 0


def test_mc_passes_are_shared_out_over_flips(net, monkeypatch):
    import SemiSupCardiacSegLib.inference as inf

    calls = []
    real = inf.sliding_window_predict

    def spy(model, image, patch, overlap, n, *args, **kwargs):
        calls.append((n, kwargs.get("dropout")))
        return real(model, image, patch, overlap, n, *args, **kwargs)

    monkeypatch.setattr(inf, "sliding_window_predict", spy)
    x = np.zeros((32, 32, 16), np.float32)
    inf.predict_model_space(net, x, (32, 32, 16), mc_samples=10, flip_axes=(0, 1))
    assert [c[0] for c in calls] == [3, 3, 2, 2] and all(c[1] is True for c in calls)
    calls.clear()
    inf.predict_model_space(net, x, (32, 32, 16), mc_samples=1, flip_axes=(0, 1))
    assert [c[0] for c in calls] == [1, 1, 1, 1] and all(c[1] is False for c in calls)


def test_mc_samples_decoded_as_one_batch_match_one_by_one(net):
    """mc_chunk > 1 decodes the samples as one batch: with dropout off every sample is the same
    pass, so the result must equal the one-by-one path exactly (a window/sample mix-up would not);
    with dropout on the samples differ (MI > 0) and probabilities still sum to 1."""
    img = np.random.default_rng(3).normal(size=(40, 36, 20)).astype(np.float32)
    one = sliding_window_predict(net, img, (32, 32, 16), mc_samples=4, window_batch=3, dropout=False, mc_chunk=1)
    batched = sliding_window_predict(net, img, (32, 32, 16), mc_samples=4, window_batch=3, dropout=False, mc_chunk=4)
    np.testing.assert_allclose(batched.probs, one.probs, atol=1e-5)
    np.testing.assert_allclose(batched.sdm, one.sdm, atol=1e-5)
    torch.manual_seed(0)
    mc = sliding_window_predict(net, img, (32, 32, 16), mc_samples=4, window_batch=3, mc_chunk=3)
    assert mc.mutual_info.max() > 0 and np.allclose(mc.probs.sum(0), 1.0, atol=1e-4)


def test_rot90_tta_is_rotation_equivariant_and_the_mean_of_the_eight(net):
    """The 8-fold TTA (rotations by k x 90 degrees in the (0, 1) plane, with and without a flip):
    rotating the input rotates the output, and the result is the mean of the 8 mapped-back passes."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 32, 16)).astype(np.float32)
    patch = (32, 32, 16)
    d4 = predict_model_space(net, x, patch, rot90=True)
    d4_r = predict_model_space(net, np.ascontiguousarray(np.rot90(x, 1, axes=(0, 1))), patch, rot90=True)
    assert np.allclose(d4_r.probs, np.rot90(d4.probs, 1, axes=(1, 2)), atol=1e-5)
    assert np.allclose(d4_r.sdm, np.rot90(d4.sdm, 1, axes=(1, 2)), atol=1e-5)
    outs = []
    for k in range(4):
        for axes in ((), (0,)):
            o = sliding_window_predict(net, np.ascontiguousarray(np.flip(np.rot90(x, k, axes=(0, 1)), axes)), patch)
            outs.append(np.rot90(np.flip(o.probs, tuple(a + 1 for a in axes)), -k, axes=(1, 2)))
    assert np.allclose(d4.probs, np.mean(outs, axis=0), atol=1e-6)
    # On a non-square grid the rotated passes map back onto the input's shape.
    y = rng.normal(size=(40, 32, 16)).astype(np.float32)
    assert predict_model_space(net, y, patch, rot90=True).probs.shape == (2, 40, 32, 16)


@pytest.mark.parametrize("sdm_decoder", ["shared", "separate"])
def test_head_only_mc_runs_the_decoder_once_and_samples_the_heads(sdm_decoder):
    """mc_scope "head": ``decode_heads(decode_trunk(f))`` is ``decode(f)``; the decoder stages run once
    per window batch (not once per sample, as with the "decoder" scope), only the last dropout is
    sampled (MI > 0), and with dropout off both scopes give the same output."""
    from SemiSupCardiacSegLib.inference import predict_with_model
    from SemiSupCardiacSegLib.preprocessing import Preprocessing
    from SemiSupCardiacSegLib.volume import Volume

    torch.manual_seed(0)
    model = build_network("vnet", {**NET, "sdm_decoder": sdm_decoder}).eval()
    feats = model.encode(torch.randn(1, 1, 32, 32, 16))
    with torch.no_grad():
        whole, split = model.decode(feats), model.decode_heads(model.decode_trunk(feats))
    assert set(whole) == set(split) == {"seg", "sdm"}
    assert all(torch.equal(whole[k], split[k]) for k in whole)
    calls = []
    model.dec1.register_forward_hook(lambda *a: calls.append(1))
    img = np.random.default_rng(5).normal(size=(40, 36, 20)).astype(np.float32)  # 2 x 2 x 2 windows
    plain = sliding_window_predict(model, img, (32, 32, 16), mc_samples=1, window_batch=8)
    calls.clear()
    head = sliding_window_predict(model, img, (32, 32, 16), mc_samples=5, window_batch=8, mc_scope="head")
    assert len(calls) == 1
    calls.clear()
    full = sliding_window_predict(model, img, (32, 32, 16), mc_samples=5, window_batch=8, mc_scope="decoder")
    assert len(calls) == 5
    assert head.mutual_info.max() > 0 and full.mutual_info.max() > 0
    assert np.allclose(head.probs.sum(0), 1.0, atol=1e-4)
    off = sliding_window_predict(model, img, (32, 32, 16), mc_samples=5, window_batch=8, mc_scope="head", dropout=False)
    np.testing.assert_allclose(off.probs, plain.probs, atol=1e-5)
    # A checkpoint's inference.mc_scope is the default of predict_with_model.
    meta = {
        "preprocessing": Preprocessing(spacing=(1.0, 1.0, 1.0)).to_dict(),
        "patch_size": [32, 32, 16],
        "network": {"num_classes": 2},
        "inference": {"mc_scope": "head"},
    }
    vol = Volume(img, (1.0, 1.0, 1.0))
    calls.clear()
    predict_with_model(model, meta, vol, mc_samples=4, tta=False, window_batch=8)
    assert len(calls) == 1
    calls.clear()
    predict_with_model(model, meta, vol, mc_samples=4, tta=False, window_batch=8, mc_scope="decoder")
    assert len(calls) == 4


def test_head_only_mc_is_refused_by_name_where_the_network_has_no_trunk():
    net2d = build_network("unet2d", {"in_channels": 1, "num_classes": 4, "n_filters": 4})
    img = np.zeros((32, 32, 2), np.float32)
    with pytest.raises(ValueError, match="UNet2D.*decoder"):
        sliding_window_predict(net2d, img, (32, 32, 1), mc_samples=2, mc_scope="head")
    with pytest.raises(ValueError, match="mc_scope must be one of"):
        sliding_window_predict(net2d, img, (32, 32, 1), mc_samples=2, mc_scope="encoder")


def test_head_mask_folded_into_the_weights_equals_dropout_then_heads():
    """Head-only MC folds the Dropout3d channel mask into the 1x1x1 weights: for a given mask the
    result equals masking the features and convolving; masks drop whole channels at rate p."""
    from SemiSupCardiacSegLib.networks.vnet import channel_mask, masked_pointwise_conv

    torch.manual_seed(3)
    x = torch.randn(3, 6, 5, 4, 3)
    conv = torch.nn.Conv3d(6, 2, 1)
    mask = channel_mask(x, 0.5)
    assert set(mask.unique().tolist()) <= {0.0, 2.0} and mask.shape == (3, 6)
    with torch.no_grad():
        expected = conv(x * mask[:, :, None, None, None])
        folded = masked_pointwise_conv(x, mask, conv.weight, conv.bias)
    assert torch.allclose(folded, expected, atol=1e-5)
    big = channel_mask(torch.zeros(400, 50), 0.3)
    assert abs(float((big == 0).float().mean()) - 0.3) < 0.02
    # In the network: with MC on, decode_heads draws masks (outputs differ between calls); off, it is decode.
    for sdm_decoder in ("shared", "separate"):
        model = build_network("vnet", {**NET, "sdm_decoder": sdm_decoder}).eval()
        with torch.no_grad():
            trunk = model.decode_trunk(model.encode(torch.randn(2, 1, 32, 32, 16)))
            plain = model.decode_heads(trunk)
            from SemiSupCardiacSegLib.inference import set_mc_dropout

            set_mc_dropout(model, True)
            a, b = model.decode_heads(trunk), model.decode_heads(trunk)
            set_mc_dropout(model, False)
        assert a["seg"].shape == plain["seg"].shape and a["sdm"].shape == plain["sdm"].shape
        assert not torch.equal(a["seg"], b["seg"]) and not torch.equal(a["sdm"], b["sdm"])
        assert float(a["sdm"].abs().max()) <= 1.0


class _GateToy(torch.nn.Module):
    """encode = identity; decode: foreground logit 80 x dropout(x) - 20. Where x = 0 every sample
    is background at p > 1 - 1e-8; where x = 1 each sample is sure (p 1 - 2e-9 or 1 - 1e-61) but
    the samples disagree (dropout keeps or zeroes x): a gate on one sample's confidence would miss it."""

    def __init__(self):
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)
        self.decodes = 0

    def encode(self, x):
        return x

    def decode(self, f):
        self.decodes += f.shape[0]
        z = 80.0 * self.drop(f) - 20.0
        return {"seg": torch.cat([torch.zeros_like(z), z], dim=1)}


def test_mc_gate_samples_only_windows_where_a_sample_is_unsure():
    x = np.zeros((32, 16, 8), np.float32)
    x[16:] = 1.0  # windows (overlap 0, 8 voxels) over x >= 16 are unsure, the rest are confident background
    patch, n = (8, 8, 8), 10
    toy = _GateToy()
    full = sliding_window_predict(toy, x, patch, overlap=0.0, mc_samples=n)
    full_decodes, toy.decodes = toy.decodes, 0
    gated = sliding_window_predict(toy, x, patch, overlap=0.0, mc_samples=n, mc_gate=0.01)
    windows = 4 * 2
    assert full_decodes == windows * n and full.mc_window_share == 1.0
    assert toy.decodes == windows // 2 * n + windows // 2 * MC_GATE_SAMPLES  # the confident half stops early
    assert gated.mc_window_share == 0.5
    # the confident half is background either way; the unsure half keeps its full MC uncertainty
    assert np.allclose(gated.probs[:, :16], full.probs[:, :16], atol=1e-6) and gated.mutual_info[:16].max() < 1e-6
    assert gated.mutual_info[16:].mean() > 0.4 and full.mutual_info[16:].mean() > 0.4


@pytest.mark.parametrize("arch", ["vnet", "unet2d"])
def test_mc_gate_changes_nothing_where_no_window_is_confident(arch, net):
    """An untrained network is unsure everywhere: with the gate every window gets all N samples,
    drawn in the same order, so the output is the ungated one (V-Net: features sliced per window;
    2D U-Net: its opaque features re-encoded)."""
    model = net if arch == "vnet" else build_network("unet2d", {**NET, "dropout_encoder": False}).eval()
    x = np.random.default_rng(1).normal(size=(48, 48, 16)).astype(np.float32)
    patch = (32, 32, 16) if arch == "vnet" else (32, 32, 1)
    outs = []
    for gate in (0.0, 0.01):
        torch.manual_seed(3)
        outs.append(sliding_window_predict(model, x, patch, mc_samples=4, mc_gate=gate))
    assert outs[1].mc_window_share == 1.0
    assert np.allclose(outs[0].probs, outs[1].probs, atol=1e-6) and np.allclose(
        outs[0].mutual_info, outs[1].mutual_info, atol=1e-6
    )


def test_mc_gate_out_of_range_is_refused_by_name(net):
    from SemiSupCardiacSegLib.errors import InputError

    with pytest.raises(InputError, match="mc_gate"):
        sliding_window_predict(net, np.zeros((32, 32, 16), np.float32), (32, 32, 16), mc_samples=2, mc_gate=1.0)
