"""Test-time augmentation and MC dropout in model space: the flip group, equivariance, how MC passes
are shared out, head-only MC; the generic sliding window and the uncertainty accumulator."""

import numpy as np
import pytest
import torch

from SemiSupCardiacSegLib.checkpoint import load_model
from SemiSupCardiacSegLib.errors import InputError
from SemiSupCardiacSegLib.inference import (
    InferenceSettings,
    Predictor,
    UncertaintyAccumulator,
    flip_sets,
    mc_window_fn,
    predict_model_space,
    sliding_window,
)
from SemiSupCardiacSegLib.model_meta import InferenceDefaults, ModelMeta
from SemiSupCardiacSegLib.networks import build_network
from SemiSupCardiacSegLib.phantoms import make_la_phantom
from SemiSupCardiacSegLib.shipped import SHIPPED
from SemiSupCardiacSegLib.volume import Volume

NET = {"in_channels": 1, "num_classes": 2, "n_filters": 4, "dropout": 0.5}


def run(model, image, patch, **settings):
    """``predict_model_space`` with ``InferenceSettings(patch, **settings)``."""
    return predict_model_space(model, image, InferenceSettings(tuple(patch), **settings))


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
    assert InferenceDefaults.from_dict({"tta_flip_axes": [0, 1]}, "m.pt").tta_flip_axes == (0, 1)
    assert InferenceDefaults.from_dict(None, "m.pt").tta_flip_axes == ()


def test_tta_output_is_flip_equivariant_and_plain_output_is_not(net):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 32, 16)).astype(np.float32)  # one window: no window-grid asymmetry
    patch = (32, 32, 16)
    tta = run(net, x, patch, flip_axes=(0, 1))
    tta_f = run(net, np.ascontiguousarray(x[::-1]), patch, flip_axes=(0, 1))
    assert np.allclose(tta_f.probs, tta.probs[:, ::-1], atol=1e-5)
    assert np.allclose(tta_f.sdm, tta.sdm[:, ::-1], atol=1e-5)
    assert np.allclose(tta_f.entropy, tta.entropy[::-1], atol=1e-5)
    plain = run(net, x, patch)
    plain_f = run(net, np.ascontiguousarray(x[::-1]), patch)
    assert not np.allclose(plain_f.probs, plain.probs[:, ::-1], atol=1e-3)
    # TTA = the mean of the four flipped-back plain predictions.
    outs = []
    for axes in flip_sets((0, 1)):
        o = run(net, np.ascontiguousarray(np.flip(x, axes)), patch)
        outs.append(np.flip(o.probs, tuple(a + 1 for a in axes)))
    assert np.allclose(tta.probs, np.mean(outs, axis=0), atol=1e-6)
    # Without dropout, MI is the flips' disagreement: >= 0 and positive somewhere.
    assert tta.mutual_info.min() >= 0 and tta.mutual_info.max() > 0


def test_mc_passes_are_shared_out_over_flips(net, monkeypatch):
    import SemiSupCardiacSegLib.inference.model_space as ms

    calls = []
    real = ms._one_transform

    def spy(model, image, settings, samples, dropout, progress):
        calls.append((samples, dropout))
        return real(model, image, settings, samples, dropout, progress)

    monkeypatch.setattr(ms, "_one_transform", spy)
    x = np.zeros((32, 32, 16), np.float32)
    run(net, x, (32, 32, 16), mc_samples=10, flip_axes=(0, 1))
    assert [c[0] for c in calls] == [3, 3, 2, 2] and all(c[1] is True for c in calls)
    calls.clear()
    run(net, x, (32, 32, 16), mc_samples=1, flip_axes=(0, 1))
    assert [c[0] for c in calls] == [1, 1, 1, 1] and all(c[1] is False for c in calls)


def test_deterministic_mask_takes_the_mask_from_dropout_off_passes_and_the_uncertainty_from_mc(net):
    """``deterministic_mask``: probabilities and SDM are those of N = 1 (one dropout-off pass per
    flip), entropy and MI those of the N MC samples; with N = 1 it changes nothing."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 32, 16)).astype(np.float32)
    patch = (32, 32, 16)
    torch.manual_seed(3)
    mc = run(net, x, patch, mc_samples=6, flip_axes=(0, 1))
    det = run(net, x, patch, mc_samples=1, flip_axes=(0, 1))
    torch.manual_seed(3)
    both = run(net, x, patch, mc_samples=6, flip_axes=(0, 1), deterministic_mask=True)
    assert not np.allclose(mc.probs, det.probs, atol=1e-3)  # dropout moves the mean: a real choice
    assert np.array_equal(both.probs, det.probs) and np.array_equal(both.sdm, det.sdm)
    assert np.array_equal(both.entropy, mc.entropy) and np.array_equal(both.mutual_info, mc.mutual_info)
    assert both.mutual_info.max() > 0  # the MC samples' disagreement, not the flips' alone
    one = run(net, x, patch, mc_samples=1, flip_axes=(0, 1), deterministic_mask=True)
    assert np.array_equal(one.probs, det.probs) and np.array_equal(one.entropy, det.entropy)


def test_rot90_tta_is_rotation_equivariant_and_the_mean_of_the_eight(net):
    """The 8-fold TTA (rotations by k x 90 degrees in the (0, 1) plane, with and without a flip):
    rotating the input rotates the output, and the result is the mean of the 8 mapped-back passes."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 32, 16)).astype(np.float32)
    patch = (32, 32, 16)
    d4 = run(net, x, patch, rot90=True)
    d4_r = run(net, np.ascontiguousarray(np.rot90(x, 1, axes=(0, 1))), patch, rot90=True)
    assert np.allclose(d4_r.probs, np.rot90(d4.probs, 1, axes=(1, 2)), atol=1e-5)
    assert np.allclose(d4_r.sdm, np.rot90(d4.sdm, 1, axes=(1, 2)), atol=1e-5)
    outs = []
    for k in range(4):
        for axes in ((), (0,)):
            o = run(net, np.ascontiguousarray(np.flip(np.rot90(x, k, axes=(0, 1)), axes)), patch)
            outs.append(np.rot90(np.flip(o.probs, tuple(a + 1 for a in axes)), -k, axes=(1, 2)))
    assert np.allclose(d4.probs, np.mean(outs, axis=0), atol=1e-6)
    # On a non-square grid the rotated passes map back onto the input's shape.
    y = rng.normal(size=(40, 32, 16)).astype(np.float32)
    assert run(net, y, patch, rot90=True).probs.shape == (2, 40, 32, 16)


@pytest.mark.parametrize("sdm_decoder", ["shared", "separate"])
def test_head_only_mc_runs_the_decoder_once_and_samples_the_heads(sdm_decoder):
    """mc_scope "head": ``decode_heads(decode_trunk(f))`` is ``decode(f)``; the decoder stages run once
    per window batch (not once per sample, as with the "decoder" scope), only the last dropout is
    sampled (MI > 0), and with dropout off both scopes give the same output."""
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
    plain = run(model, img, (32, 32, 16), mc_samples=1, window_batch=8)
    calls.clear()
    head = run(model, img, (32, 32, 16), mc_samples=5, window_batch=8, mc_scope="head")
    assert len(calls) == 1
    calls.clear()
    full = run(model, img, (32, 32, 16), mc_samples=5, window_batch=8, mc_scope="decoder")
    assert len(calls) == 5
    assert head.mutual_info.max() > 0 and full.mutual_info.max() > 0
    assert np.allclose(head.probs.sum(0), 1.0, atol=1e-4)
    with torch.no_grad():  # dropout off (as set_mc_dropout leaves it): both scopes are the plain pass
        off = sliding_window(mc_window_fn(model, 5, "head", dropout=False), img, (32, 32, 16), window_batch=8)
    np.testing.assert_allclose(off["probs"], plain.probs, atol=1e-5)
    # A checkpoint's inference.mc_scope is the default of InferenceSettings.from_meta.
    meta = ModelMeta.from_dict(
        {
            "arch": "vnet",
            "preprocessing": Preprocessing(spacing=(1.0, 1.0, 1.0)).to_dict(),
            "patch_size": [32, 32, 16],
            "network": {"num_classes": 2},
            "labels": {"1": "x"},
            "inference": {"mc_scope": "head"},
        },
        "m.pt",
    )
    vol = Volume(img, (1.0, 1.0, 1.0))
    calls.clear()
    Predictor(model, meta, InferenceSettings.from_meta(meta, mc_samples=4, tta=False, window_batch=8)).predict(vol)
    assert len(calls) == 1
    calls.clear()
    settings = InferenceSettings.from_meta(meta, mc_samples=4, tta=False, window_batch=8, mc_scope="decoder")
    Predictor(model, meta, settings).predict(vol)
    assert len(calls) == 4


def test_head_only_mc_is_refused_by_name_where_the_network_has_no_trunk():
    net2d = build_network("unet2d", {"in_channels": 1, "num_classes": 4, "n_filters": 4})
    img = np.zeros((32, 32, 2), np.float32)
    with pytest.raises(ValueError, match="UNet2D.*decoder"):
        run(net2d, img, (32, 32, 1), mc_samples=2, mc_scope="head")
    with pytest.raises(ValueError, match="mc_scope must be one of"):
        run(net2d, img, (32, 32, 1), mc_samples=2, mc_scope="encoder")


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


def test_sliding_window_blends_any_window_function_back_onto_the_image():
    """The window loop knows nothing of what runs in a window: an identity window function comes
    back as the image (Gaussian weights cancel), on a grid smaller than the patch (padding) too,
    with channelled and plain outputs alike."""
    img = np.random.default_rng(2).normal(size=(37, 20, 9)).astype(np.float32)
    maps = sliding_window(lambda x: {"same": x, "plain": x[:, 0] * 2}, img, (16, 16, 16), overlap=0.25, window_batch=3)
    np.testing.assert_allclose(maps["same"][0], img, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps["plain"], 2 * img, rtol=1e-5, atol=1e-6)
    assert maps["same"].shape == (1,) + img.shape and maps["plain"].dtype == np.float32


def test_uncertainty_accumulator_weights_passes_and_splits_entropy():
    """Weighted means of p, E[H] and SDM; MI = H(p_bar) - E[H] is 0 for agreeing passes and ln 2 for
    two sure passes that disagree."""
    from SemiSupCardiacSegLib.inference import predictive_uncertainty

    sure0, sure1 = np.array([[1.0], [0.0]]), np.array([[0.0], [1.0]])
    acc = UncertaintyAccumulator()
    for p in (sure0, sure1):
        acc.add(p, sdm=p[1:] * 2 - 1, expected_entropy=np.zeros(1), weight=0.5)
    mean = acc.mean()
    np.testing.assert_allclose(mean["probs"], [[0.5], [0.5]])
    np.testing.assert_allclose(mean["sdm"], [[0.0]])
    h, mi = predictive_uncertainty(mean["probs"], mean["expected_entropy"])
    np.testing.assert_allclose([h[0], mi[0]], [np.log(2), np.log(2)], rtol=1e-6)
    weighted = UncertaintyAccumulator()
    weighted.add(torch.tensor([[[0.2]], [[0.8]]])[None, :, 0], weight=3.0)  # (B=1, K=2, 1) torch, entropy computed
    weighted.add(torch.tensor([[[0.6]], [[0.4]]])[None, :, 0], weight=1.0)
    np.testing.assert_allclose(weighted.mean()["probs"].numpy()[0, :, 0], [0.3, 0.7], rtol=1e-6)
    assert "sdm" not in weighted.mean()


def test_inference_settings_are_checked_once_by_name():
    for kwargs, match in (
        ({"overlap": 1.0}, "overlap must be in"),
        ({"mc_samples": 0}, "mc_samples must be an integer in"),
        ({"mc_samples": 1001}, "mc_samples must be an integer in"),
        ({"mc_scope": "all"}, "mc_scope must be one of"),
        ({"window_batch": 0}, "window_batch must be"),
        ({"flip_axes": (2,), "rot90": True}, "would be ignored"),
    ):
        with pytest.raises(InputError, match=match):
            InferenceSettings((32, 32, 16), **kwargs)
    with pytest.raises(InputError, match="patch_size"):
        InferenceSettings((32, 32))
    s = InferenceSettings((32, 32, 16), flip_axes=[1, 0], rot90=True)
    assert s.flip_axes == (0, 1) and len(s.tta_transforms()) == 8
    assert s.report() == {
        "mc_samples": 1,
        "tta_flip_axes": [0, 1],
        "tta_rot90": True,
        "mc_scope": "decoder",
        "localize": True,
        "precision": "auto",
        "deterministic_mask": False,
    }
    with pytest.raises(InputError, match="deterministic_mask must be true or false"):
        InferenceSettings((32, 32, 16), deterministic_mask="yes")
    with pytest.raises(InputError, match="m.pt: inference.deterministic_mask must be true or false"):
        InferenceDefaults.from_dict({"deterministic_mask": 1}, "m.pt")


def test_reduced_precision_agrees_with_float32_on_the_shipped_la_model():
    """The GPU path's autocast, checked here with CPU bfloat16 (the CPU has no fast float16 kernels):
    labels agree on >= 99.9 % of voxels with the float32 pass."""
    if not SHIPPED["la"].path.is_file():
        pytest.skip("shipped LA model not present in models/")
    net, meta = load_model("la")
    ph = make_la_phantom(seed=3)
    centre = [int(np.mean(i)) for i in np.nonzero(ph.label)]
    box = tuple(slice(max(0, c - h), max(0, c - h) + 2 * h) for c, h in zip(centre, (64, 64, 32)))
    vol = Volume(np.ascontiguousarray(ph.image[box]), np.array(ph.spacing))  # one 64 x 64 x 32 window
    preds = {
        p: Predictor(net, meta, InferenceSettings.from_meta(meta, tta=False, mc_samples=1, device="cpu", precision=p))
        .predict(vol)
        .labels.array
        for p in ("float32", "bfloat16")
    }
    assert preds["float32"].any()
    assert (preds["float32"] == preds["bfloat16"]).mean() >= 0.999
    with pytest.raises(InputError, match="precision"):
        InferenceSettings((32, 32, 16), precision="half")
