"""BCP's bidirectional copy-paste (config ``copy_paste``, ``methods.copy_paste``): the mask, the mixes,
the voxel-weighted loss, the EMA teacher, how it joins a method's steps, config checks and resume."""

import json

import pytest
import torch
from conftest import TINY

from SemiSupCardiacSegLib.config_check import validate_config
from SemiSupCardiacSegLib.errors import InputError
from SemiSupCardiacSegLib.losses import dice_ce_loss
from SemiSupCardiacSegLib.methods import get_method
from SemiSupCardiacSegLib.methods.copy_paste import CopyPaste, cuboid_mask
from SemiSupCardiacSegLib.training import DEFAULTS, Trainer, merge_config

NET = {"in_channels": 1, "num_classes": 2, "n_filters": 2, "dropout": 0.0}


def test_cuboid_mask_has_the_ratio_size_and_stays_inside():
    torch.manual_seed(0)
    starts = set()
    for _ in range(50):
        m = cuboid_mask((12, 9, 1), 2 / 3)
        assert m.sum() == 8 * 6 * 1  # round(2/3 x 12) x round(2/3 x 9) x the whole size-1 axis
        idx = m.nonzero()
        lo, hi = idx.min(0).values, idx.max(0).values
        assert (hi - lo + 1).tolist() == [8, 6, 1]  # one box, not scattered voxels
        starts.add(tuple(lo.tolist()))
    assert len(starts) > 5  # the place is drawn


def test_weighted_loss_is_dice_ce_with_unit_weights_and_ignores_zero_weight_voxels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 5, 4, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 6, 5, 4), generator=g)
    ones = torch.ones(2, 6, 5, 4)
    assert torch.allclose(dice_ce_loss(logits, target, ones), dice_ce_loss(logits, target), atol=1e-6)
    w = ones.clone()
    w[:, :3] = 0.0
    dice_ce_loss(logits, target, w).backward()
    assert logits.grad[:, :, :3].abs().max() == 0 and logits.grad[:, :, 3:].abs().max() > 0
    # Weight 0 on a region equals the unweighted loss of the rest.
    kept = dice_ce_loss(logits[:, :, 3:], target[:, 3:], ones[:, 3:])
    assert torch.allclose(dice_ce_loss(logits, target, w), kept, atol=1e-6)


def test_mixes_paste_each_way_with_labels_and_weights_by_hand():
    torch.manual_seed(3)
    cp = CopyPaste(torch.nn.Identity(), {"ratio": 0.5}, 100)
    shape = (8, 8, 4)
    image = torch.cat([torch.full((2, 1, *shape), 1.0), torch.full((2, 1, *shape), 2.0)])  # labeled 1, unlabeled 2
    label = torch.zeros(4, *shape, dtype=torch.long)
    label[:2] = 1  # labeled rows all foreground
    pseudo = torch.zeros(2, *shape, dtype=torch.long)  # unlabeled rows' pseudo-labels all background
    images, labels, weights = cp.mix({"image": image, "label": label, "n_labeled": 2}, pseudo, alpha=0.25)
    assert images.shape == (2, 1, *shape) and labels.shape == weights.shape == (2, *shape)
    cuboid = 4 * 4 * 2
    # Pair 0 (inward): the unlabeled cuboid inside the labeled image.
    assert (images[0] == 2).sum() == cuboid and (labels[0] == 0).sum() == cuboid
    assert torch.equal(images[0, 0] == 2, labels[0] == 0) and torch.equal(weights[0] == 0.25, labels[0] == 0)
    # Pair 1 (outward): the labeled cuboid inside the unlabeled image.
    assert (images[1] == 1).sum() == cuboid and (labels[1] == 1).sum() == cuboid
    assert torch.equal(weights[1] == 1.0, labels[1] == 1) and (weights[1] == 0.25).sum() == 8 * 8 * 4 - cuboid


def test_teacher_is_an_ema_of_parameters_and_batch_norm_statistics():
    torch.manual_seed(0)
    m = get_method("uamt")({"network": NET, "iterations": 100, "copy_paste": {}})
    teacher = m.copy_paste.teacher
    assert all(not p.requires_grad for p in teacher.parameters())
    m.copy_paste.update_teacher(m.model, 0)  # iteration 0 copies the network (also after --init)
    for t, s in zip(teacher.state_dict().values(), m.model.state_dict().values()):
        assert torch.equal(t, s)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        for p in m.model.parameters():
            p.add_(1.0)
        for name, b in m.model.named_buffers():
            if b.is_floating_point():
                b.add_(2.0)
    m.copy_paste.update_teacher(m.model, 5)  # a = min(1 - 1/6, 0.99) = 5/6
    own = m.model.state_dict()
    for k, v in teacher.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, 5 / 6 * before[k] + 1 / 6 * own[k], atol=1e-6), k
    assert any(k.startswith("copy_paste.teacher.") for k in m.state_dict())  # saved with the method's state


def test_unlabeled_weight_ramps_from_near_zero_to_its_value():
    cp = CopyPaste(torch.nn.Identity(), {}, 1000)
    assert cp.unlabeled_weight(0) == pytest.approx(0.5 * torch.exp(torch.tensor(-5.0)).item())
    assert cp.unlabeled_weight(400) == pytest.approx(0.5) and cp.unlabeled_weight(900) == pytest.approx(0.5)


def test_step_losses_add_the_term_to_the_model_step_only():
    torch.manual_seed(0)
    cfg = {"network": NET, "iterations": 100, "method_params": {"disc_filters": 4}}
    g = torch.Generator().manual_seed(1)
    label = torch.zeros(4, 16, 16, 16, dtype=torch.long)
    label[:, 4:12, 4:12, 4:12] = 1
    from SemiSupCardiacSegLib.sdm import signed_distance_map

    sdm = torch.from_numpy(signed_distance_map(label[0].numpy()))[None, None].repeat(4, 1, 1, 1, 1)
    batch = {"image": torch.randn(4, 1, 16, 16, 16, generator=g), "label": label, "sdm": sdm, "n_labeled": 2}
    plain = get_method("sassnet")(cfg)
    with_cp = get_method("sassnet")({**cfg, "copy_paste": {}})
    with_cp.load_state_dict(plain.state_dict(), strict=False)  # the same network and discriminator
    torch.manual_seed(2)  # the same draws (the discriminator's dropout) in the method's own terms
    a = plain.step_losses(batch, 50)
    torch.manual_seed(2)
    b = with_cp.step_losses(batch, 50)
    assert a.optimizers == b.optimizers == ("model", "discriminator")
    assert "loss_copy_paste" not in a.logs and b.logs["loss_copy_paste"] > 0
    assert torch.allclose(b.loss("model"), a.loss("model") + b.logs["loss_copy_paste"], atol=1e-5)
    assert torch.allclose(b.loss("discriminator"), a.loss("discriminator"), atol=1e-6)
    b.loss("model").backward()
    assert all(p.grad is None for p in with_cp.copy_paste.teacher.parameters())


def test_config_checks_name_the_problem():
    base = merge_config(DEFAULTS, {"method": "sassnet"})
    validate_config({**base, "copy_paste": {}})
    validate_config({**base, "copy_paste": {"ratio": 0.5, "unlabeled_weight": 1.0, "ema_decay": 0.999}})
    with pytest.raises(InputError, match="method supervised trains on labeled images only"):
        validate_config({**merge_config(DEFAULTS, {"method": "supervised"}), "copy_paste": {}})
    with pytest.raises(InputError, match="copy_paste.alpha"):
        validate_config({**base, "copy_paste": {"alpha": 0.5}})
    with pytest.raises(InputError, match="copy_paste.ratio"):
        validate_config({**base, "copy_paste": {"ratio": 1.0}})
    with pytest.raises(InputError, match="must be an object"):
        validate_config({**base, "copy_paste": True})


def test_training_with_copy_paste_logs_it_and_resumes_exactly(phantom_folder, tmp_path):
    """A stop + --resume of a copy-paste run gives the losses of a straight run (the EMA teacher and
    the RNG that places the cuboids are restored)."""
    cfg = {
        **TINY,
        "data": str(phantom_folder),
        "iterations": 8,
        "validation": {"last": 0},
        "checkpoint_every": 100,
        "copy_paste": {"rampup": 0.0},
    }
    Trainer(cfg, tmp_path / "straight", device="cpu", progress=False).run()
    Trainer(cfg, tmp_path / "sliced", device="cpu", progress=False).run(stop_after=3)
    Trainer(cfg, tmp_path / "sliced", device="cpu", progress=False).run(resume=True)

    def rows(run):
        logs = map(json.loads, (run / "log.jsonl").read_text().splitlines())
        return [(r["iteration"], r["loss"], r["loss_copy_paste"]) for r in logs if "loss_copy_paste" in r]

    straight = rows(tmp_path / "straight")
    assert len(straight) == 8 and all(r[2] > 0 for r in straight)
    assert rows(tmp_path / "sliced") == straight
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["copy_paste"] == {"rampup": 0.0}  # the run's record says it was on
