"""Losses against hand-computed values; methods change exactly the parameters they should."""

import math
import sys

import pytest
import torch
from conftest import REPO

from SemiSupCardiacSegLib.losses import dice_ce_loss, discriminator_loss, generator_loss, soft_dice_loss
from SemiSupCardiacSegLib.methods import METHODS, get_method
from SemiSupCardiacSegLib.schedules import poly_lr, sigmoid_rampup, step_lr

sys.path.insert(0, str(REPO / "benchmarks"))
from method_comparison import COUNTERPARTS_2D  # noqa: E402  the 3D methods the cine accuracy table runs on the U-Net

TINY = {"network": {"in_channels": 1, "num_classes": 2, "n_filters": 2, "dropout": 0.5}, "iterations": 100}


def test_soft_dice_by_hand():
    # Two voxels; foreground probabilities 0.8 and 0.3; target 1 and 0.
    probs = torch.tensor([[[0.2, 0.7], [0.8, 0.3]]])  # (B=1, K=2, N=2)
    target = torch.tensor([[1, 0]])
    inter, psum, gsum = 0.8, 0.8 + 0.3, 1.0
    expected = 1 - (2 * inter + 1e-5) / (psum + gsum + 1e-5)
    assert soft_dice_loss(probs, target).item() == pytest.approx(expected, rel=1e-6)


def test_soft_dice_empty_target_and_empty_prediction_is_zero():
    probs = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    assert soft_dice_loss(probs, torch.tensor([[0, 0]])).item() == pytest.approx(0.0, abs=1e-6)
    probs_fg = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    assert soft_dice_loss(probs_fg, torch.tensor([[0, 0]])).item() == pytest.approx(1.0, abs=1e-5)


def test_dice_ce_by_hand():
    logits = torch.tensor([[[0.0, 2.0], [1.0, 0.0]]])  # (1, 2 classes, 2 voxels)
    target = torch.tensor([[1, 0]])
    p = torch.softmax(logits, 1)
    ce = -(math.log(p[0, 1, 0].item()) + math.log(p[0, 0, 1].item())) / 2
    inter = p[0, 1, 0].item()
    dice = 1 - (2 * inter + 1e-5) / (p[0, 1].sum().item() + 1 + 1e-5)
    assert dice_ce_loss(logits, target).item() == pytest.approx(0.5 * (ce + dice), rel=1e-5)


def test_adversarial_losses_by_hand():
    zl, zu = torch.tensor([2.0]), torch.tensor([-1.0, 0.5])
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    d = -(math.log(sig(2.0)) + math.log(1 - sig(-1.0)) + math.log(1 - sig(0.5))) / 3
    assert discriminator_loss(zl, zu).item() == pytest.approx(d, rel=1e-6)
    g = -(math.log(sig(-1.0)) + math.log(sig(0.5))) / 2
    assert generator_loss(zu).item() == pytest.approx(g, rel=1e-6)


def test_schedules():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(500, 100) == 1.0
    assert step_lr(0.01, 2499, 2500) == pytest.approx(0.01) and step_lr(0.01, 2500, 2500) == pytest.approx(0.001)
    assert poly_lr(0.01, 0, 10) == pytest.approx(0.01) and poly_lr(0.01, 10, 10) == 0.0


def _batch(n=4, n_lab=2, size=16):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(n, 1, size, size, size, generator=g)
    label = torch.zeros(n, size, size, size, dtype=torch.long)
    label[:, 4:12, 4:12, 4:12] = 1
    from SemiSupCardiacSegLib.sdm import signed_distance_map

    sdm = torch.from_numpy(signed_distance_map(label[0].numpy()))[None, None].repeat(n, 1, 1, 1, 1)
    return {"image": image, "label": label, "sdm": sdm, "n_labeled": n_lab}


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module):
    return any(not torch.equal(b, p.detach()) for b, p in zip(before, module.parameters()))


def _check_alternating_steps(m, out, opts):
    """The segmenter's step moves only the segmenter, the discriminator's only the discriminator."""
    seg0, d0 = _snapshot(m.model), _snapshot(m.discriminator)
    opts["model"].zero_grad()
    out.loss("model").backward(retain_graph=True)
    opts["model"].step()
    assert _changed(seg0, m.model) and not _changed(d0, m.discriminator)
    seg1 = _snapshot(m.model)
    opts["discriminator"].zero_grad()
    out.loss("discriminator").backward()
    opts["discriminator"].step()
    assert _changed(d0, m.discriminator) and not _changed(seg1, m.model)


def test_registry_has_foundation_methods():
    assert {"supervised", "sassnet", "dtc"} <= set(METHODS)
    with pytest.raises(ValueError, match="unknown method"):
        get_method("nope")


def test_sassnet_steps_touch_only_their_networks():
    torch.manual_seed(0)
    m = get_method("sassnet")({**TINY, "method_params": {"disc_filters": 4}})
    opts = {k: torch.optim.SGD(p, lr=0.1) for k, p in m.optimizer_groups().items()}
    out = m.training_step(_batch(), iteration=100)  # adversarial weight fully ramped up
    assert out.optimizers == ("model", "discriminator") and out.logs["adv_weight"] == pytest.approx(0.001)
    _check_alternating_steps(m, out, opts)


def test_discriminator_loss_has_no_path_to_segmenter():
    m = get_method("sassnet")({**TINY, "method_params": {"disc_filters": 4}})
    out = m.training_step(_batch(), iteration=0)
    grads = torch.autograd.grad(out.loss("discriminator"), list(m.model.parameters()), allow_unused=True)
    assert all(g is None for g in grads)


def test_supervised_uses_only_labeled_rows():
    m = get_method("supervised")(TINY)
    b = _batch()
    b["image"][2:] = float("nan")  # unlabeled rows must not be touched
    out = m.training_step(b, 0)
    assert torch.isfinite(out.loss("model")) and "loss_sdm" in out.logs


def test_dtc_consistency_by_hand_and_uses_unlabeled_rows():
    torch.manual_seed(0)
    m = get_method("dtc")({**TINY, "iterations": 100})
    assert m.consistency_weight(0) == pytest.approx(math.exp(-5)) and m.consistency_weight(100) == pytest.approx(1.0)
    b = _batch()
    torch.manual_seed(1)  # same dropout masks in both forward passes (BatchNorm uses batch statistics)
    out = m.training_step(b, iteration=100)
    torch.manual_seed(1)
    pred = m.model(b["image"])
    p_fg = torch.softmax(pred["seg"], 1)[:, 1:]
    by_hand = ((torch.sigmoid(-1500.0 * pred["sdm"]) - p_fg) ** 2).mean()
    assert out.logs["loss_consistency"] == pytest.approx(float(by_hand.detach()), rel=1e-4)
    # The consistency term reaches the network through the unlabeled rows too.
    b["image"][2:] = float("nan")
    bad = m.training_step(b, iteration=100)
    assert not torch.isfinite(bad.loss("model"))


def test_uamt_teacher_is_ema_of_student_and_gets_no_gradient():
    torch.manual_seed(0)
    m = get_method("uamt")({**TINY, "method_params": {"mc_passes": 2}})
    assert "uamt" in METHODS and all(not p.requires_grad for p in m.teacher.parameters())
    opt = torch.optim.SGD(m.optimizer_groups()["model"], lr=0.1)
    teacher0 = _snapshot(m.teacher)
    out = m.training_step(_batch(), iteration=100)
    assert 0.0 <= out.logs["certain_fraction"] <= 1.0
    assert out.logs["uncertainty_threshold"] == pytest.approx(math.log(2))  # fully ramped: ln K
    opt.zero_grad()
    out.loss("model").backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    opt.step()
    m.after_step(5)  # a = min(1 - 1/6, 0.99) = 5/6
    for t0, t, s in zip(teacher0, m.teacher.parameters(), m.model.parameters()):
        assert torch.allclose(t, 5 / 6 * t0 + 1 / 6 * s.detach(), atol=1e-6)
    # The teacher state is part of the method's state (saved in resume checkpoints).
    assert any(k.startswith("teacher.") for k in m.state_dict())


def test_dtml_each_network_gets_only_its_own_losses():
    torch.manual_seed(0)
    m = get_method("dtml")({**TINY, "iterations": 100})
    assert m.arch == "dual_vnet"
    b = _batch()
    out = m.training_step(b, iteration=100)
    seg_params = [p for n, p in m.model.seg_net.named_parameters() if not n.startswith("sdm_head")]
    sdm_params = [p for n, p in m.model.sdm_net.named_parameters() if not n.startswith("seg_head")]
    unused = list(m.model.seg_net.sdm_head.parameters()) + list(m.model.sdm_net.seg_head.parameters())
    # The summed loss reaches both networks; the unused heads get nothing.
    g_total = torch.autograd.grad(out.loss("model"), seg_params + sdm_params + unused, allow_unused=True)
    assert all(g is not None for g in g_total[: len(seg_params) + len(sdm_params)])
    assert all(g is None for g in g_total[len(seg_params) + len(sdm_params) :])
    m.config["consistency"] = 0.0  # without L_con the two networks are independent
    torch.manual_seed(2)
    pred = m.model(b["image"])
    from SemiSupCardiacSegLib.losses import segmentation_loss

    l_seg = segmentation_loss("dice_ce", pred["seg"][:2], b["label"][:2])
    grads = torch.autograd.grad(l_seg, sdm_params, allow_unused=True)
    assert all(g is None for g in grads)
    # The exported network rebuilds from its checkpoint config and gives both outputs.
    from SemiSupCardiacSegLib.networks import build_network

    net = build_network("dual_vnet", TINY["network"]).eval()
    y = net(torch.zeros(1, 1, 16, 16, 16))
    assert y["seg"].shape == (1, 2, 16, 16, 16) and y["sdm"].shape == (1, 1, 16, 16, 16)


# ----------------------------------------------------------------------------- cross-task family
from SemiSupCardiacSegLib.losses import (  # noqa: E402
    adv_gm_discriminator_loss,
    adv_gm_generator_loss,
    cross_task_loss,
    geman_mcclure,
    guidance_loss,
)


def test_cross_task_and_guidance_by_hand():
    p = torch.tensor([[[0.9, 0.2, 0.5]]])  # (B=1, K-1=1, 3 voxels)
    q = torch.tensor([[[0.6, 0.2, 1.0]]])
    assert cross_task_loss(p, q).item() == pytest.approx((0.09 + 0.0 + 0.25) / 3)
    certain = torch.tensor([[True, False, True]])
    assert guidance_loss(p, q, certain).item() == pytest.approx((0.09 + 0.25) / 2)
    # U(x) >= t everywhere: nothing is certain -> 0 and no gradient, never NaN.
    p_req = p.clone().requires_grad_(True)
    none = guidance_loss(p_req, q, torch.zeros(1, 3, dtype=torch.bool))
    none.backward()
    assert none.item() == 0.0 and torch.all(p_req.grad == 0)
    # Everything certain: the guidance loss equals the cross-task loss.
    assert guidance_loss(p, q, torch.ones(1, 3, dtype=torch.bool)).item() == pytest.approx(cross_task_loss(p, q).item())


def test_cross_task_on_empty_mask_and_all_foreground_crop():
    from SemiSupCardiacSegLib.sdm import sdm_to_probability

    # Empty mask: SDM +1 everywhere -> transformed mask 0; a segmenter predicting 0 has zero loss.
    sdm = torch.ones(1, 1, 4)
    assert cross_task_loss(torch.zeros(1, 1, 4), sdm_to_probability(sdm)).item() == pytest.approx(0.0, abs=1e-12)
    # All-foreground crop: SDM -1 -> 1; predicting 0.5 everywhere costs 0.25.
    assert cross_task_loss(torch.full((1, 1, 4), 0.5), sdm_to_probability(-sdm)).item() == pytest.approx(0.25)


def test_adversarial_geman_mcclure_by_hand():
    dl, du = torch.tensor([0.5, 0.0]), torch.tensor([0.0, 1.0])
    # pair 1: r2 = 0.25 + 1 = 1.25 -> 1.25 / (1 + 1.25); pair 2: r2 = 0 -> 0 (beta = 0.5 -> 2 beta = 1)
    assert adv_gm_discriminator_loss(dl, du, 0.5).item() == pytest.approx((1.25 / 2.25 + 0.0) / 2)
    assert adv_gm_generator_loss(torch.tensor([2.0]), 0.5).item() == pytest.approx(4.0 / 5.0)
    assert geman_mcclure(torch.tensor(1e6)).item() < 1.0  # bounded: the robustness the paper wants


def test_mc_uncertainties_by_hand():
    from SemiSupCardiacSegLib.methods.mtctl import mean_class_std, mean_sample_entropy

    s = torch.tensor([[[[0.5], [0.5]]], [[[1.0], [0.0]]]])  # (N=2, B=1, K=2, 1 voxel)
    assert mean_class_std(s).item() == pytest.approx(0.25)  # std of (0.5, 1.0) = 0.25, both classes
    assert mean_sample_entropy(s).item() == pytest.approx(math.log(2) / 2)


TINY_2D = {
    "arch": "unet2d",
    "network": {"in_channels": 1, "num_classes": 4, "n_filters": 2, "dropout": 0.1},
    "iterations": 100,
}


def _batch_2d(n=4, n_lab=2, size=32):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(n, 1, size, size, 1, generator=g)
    label = torch.zeros(n, size, size, 1, dtype=torch.long)
    label[:, 8:24, 8:24] = 2
    label[:, 12:20, 12:20] = 3
    label[:, 2:8, 10:20] = 1
    from SemiSupCardiacSegLib.sdm import multiclass_sdm

    sdm = torch.from_numpy(multiclass_sdm(label[0].numpy(), 4))[None].repeat(n, 1, 1, 1, 1)
    return {"image": image, "label": label, "sdm": sdm, "n_labeled": n_lab}


@pytest.mark.parametrize(
    "name,config,batch",
    [
        ("mtctl", {**TINY, "method_params": {"disc_filters": 4, "mc_passes": 2}}, _batch),
        ("bmtctl", {**TINY_2D, "method_params": {"disc_filters": 4, "mc_passes": 3}}, _batch_2d),
    ],
)
def test_cross_task_methods_steps_touch_only_their_networks(name, config, batch):
    torch.manual_seed(0)
    m = get_method(name)(config)
    assert m.network_params["sdm_decoder"] == "separate"  # one decoder per task on a shared encoder
    opts = {k: torch.optim.SGD(p, lr=0.1) for k, p in m.optimizer_groups().items()}
    out = m.training_step(batch(), iteration=100)
    assert out.optimizers == ("model", "discriminator")
    assert 0.0 <= out.logs["certain_fraction"] <= 1.0 and out.logs["consistency_weight"] == pytest.approx(1.0)
    grads = torch.autograd.grad(
        out.loss("discriminator"), list(m.model.parameters()), allow_unused=True, retain_graph=True
    )
    assert all(g is None for g in grads)
    _check_alternating_steps(m, out, opts)


def test_mtctl_cross_task_term_uses_unlabeled_rows():
    m = get_method("mtctl")({**TINY, "method_params": {"disc_filters": 4, "mc_passes": 2, "adv_weight": 0.0}})
    b = _batch()
    b["image"][2:] = float("nan")
    bad = m.training_step(b, iteration=100)
    assert not torch.isfinite(bad.loss("model"))


def test_bmtctl_without_consistency_is_its_supervised_terms_and_skips_the_mc_passes():
    """The benchmark's ``bmtctl_no_consistency`` control: consistency 0 leaves L_dice + 0.3 L_dis
    (+ the adversarial term, here 0) and never draws the N dropout samples."""
    m = get_method("bmtctl")(
        {**TINY_2D, "method_params": {"disc_filters": 4, "mc_passes": 3, "consistency": 0.0, "adv_weight": 0.0}}
    )
    m.model.eval()  # no dropout: the two forward passes below see the same network

    def no_mc(image):
        raise AssertionError("MC passes ran with the consistency weight at 0")

    m.uncertainty = no_mc
    b = _batch_2d()
    out = m.training_step(b, iteration=100)
    sup, _ = m.supervised_losses(m.model(b["image"]), b, int(b["n_labeled"]))
    assert out.logs["consistency_weight"] == 0.0
    assert float(out.loss("model")) == pytest.approx(float(sup), rel=1e-6)


def test_mtn_uncertainty_weights_by_hand_and_log_sigma_learns():
    from SemiSupCardiacSegLib.losses import uncertainty_weighted_loss
    from SemiSupCardiacSegLib.methods.mtn import myocardial_area

    l1, l2, s1, s2 = torch.tensor(2.0), torch.tensor(0.5), torch.tensor(0.3), torch.tensor(-0.2)
    expected = math.exp(-0.3) * 2.0 + math.exp(0.4) * 0.5 + 0.3 - 0.2
    assert uncertainty_weighted_loss(l1, l2, s1, s2).item() == pytest.approx(expected, rel=1e-6)
    lab = torch.zeros(2, 10, 8, 1, dtype=torch.long)
    lab[0, :5, :4] = 2  # 20 of the slice's 80 pixels
    assert myocardial_area(lab, 2)[:, 0].tolist() == pytest.approx([0.25, 0.0])
    torch.manual_seed(0)
    m = get_method("mtn")({**TINY_2D})
    assert not m.uses_unlabeled and m.model.config.area_head
    opt = torch.optim.SGD(m.optimizer_groups()["model"], lr=0.1)
    out = m.training_step(_batch_2d(), 0)
    opt.zero_grad()
    out.loss("model").backward()
    assert m.log_sigma.grad is not None and torch.all(m.log_sigma.grad != 0)
    before = m.log_sigma.detach().clone()
    opt.step()
    assert not torch.equal(before, m.log_sigma.detach())
    assert {"loss_area", "log_sigma_area", "log_sigma_seg"} <= set(out.logs)


def test_mtn_area_head_learns_the_area():
    """The regression path reaches the area within a few dozen steps (with the area in hundreds of
    pixels it could not: its L1 stayed flat and pulled the shared decoder instead)."""
    from SemiSupCardiacSegLib.methods.mtn import myocardial_area

    torch.manual_seed(0)
    m = get_method("mtn")({**TINY_2D, "network": {**TINY_2D["network"], "dropout": 0.0}})
    batch = _batch_2d(n=2, n_lab=2)
    target = myocardial_area(batch["label"], 2)
    opt = torch.optim.Adam(m.optimizer_groups()["model"], lr=1e-2)
    first = None
    for step in range(60):
        out = m.training_step(batch, step)
        opt.zero_grad()
        out.loss("model").backward()
        opt.step()
        first = out.logs["loss_area"] if first is None else first
    with torch.no_grad():
        area = m.model(batch["image"])["area"]
    assert first > 0.05 and out.logs["loss_area"] < 0.25 * first
    assert torch.allclose(area, target, atol=0.03)


def test_unet2d_treats_each_slice_independently():
    from SemiSupCardiacSegLib.networks import build_network

    torch.manual_seed(0)
    net = build_network(
        "unet2d", {"num_classes": 4, "n_filters": 2, "area_head": True, "sdm_decoder": "separate"}
    ).eval()
    x = torch.randn(2, 1, 32, 32, 3)
    out5 = net(x)
    assert (
        out5["seg"].shape == (2, 4, 32, 32, 3)
        and out5["sdm"].shape == (2, 3, 32, 32, 3)
        and out5["area"].shape == (2, 3)
    )
    out4 = net(x[..., 1])
    assert torch.allclose(out5["seg"][..., 1], out4["seg"], atol=1e-5)
    assert torch.allclose(out5["area"][:, 1], out4["area"], atol=1e-5)
    with pytest.raises(ValueError, match="expects"):
        net(torch.zeros(1, 32, 32))


@pytest.mark.parametrize(
    "name,two_d", [(n, n in ("bmtctl", "mtn")) for n in sorted(METHODS)] + [(n, True) for n in COUNTERPARTS_2D]
)
def test_every_method_short_run_supervised_loss_falls(name, two_d):
    """25 steps on one fixed batch: the supervised segmentation loss must fall for every method
    (and for the 2D counterparts of the 3D ones, on slices)."""
    torch.manual_seed(0)
    cfg = dict(TINY_2D if two_d else TINY)
    cfg["network"] = {**cfg["network"], "n_filters": 4, "dropout": 0.1}
    cfg["method_params"] = (
        {"disc_filters": 4, "mc_passes": 2}
        if name in ("sassnet", "mtctl", "bmtctl")
        else ({"mc_passes": 2} if name == "uamt" else {})
    )
    m = get_method(name)(cfg)
    opts = {k: torch.optim.Adam(p, lr=1e-2) for k, p in m.optimizer_groups().items()}
    batch = _batch_2d() if two_d else _batch()
    # An image that shows the structures (label intensity + noise), as a real one would.
    batch["image"] = batch["label"].unsqueeze(1).float() + 0.3 * torch.randn(
        batch["image"].shape, generator=torch.Generator().manual_seed(1)
    )
    seg = []
    for it in range(25):
        out = m.training_step(batch, it)
        for step in out.steps:
            opts[step.optimizer].zero_grad(set_to_none=True)
            step.loss.backward(retain_graph=True)
            opts[step.optimizer].step()
        m.after_step(it + 1)
        seg.append(out.logs["loss_seg"])
    assert sum(seg[-5:]) / 5 < 0.85 * sum(seg[:3]) / 3, seg
