"""Checkpoints: round trip with metadata, weights-only loading, clear errors for bad files, atomic writes."""

import os
import pickle

import pytest
import torch

from SemiSupCardiacSegLib.atomic import atomic_write_text
from SemiSupCardiacSegLib.checkpoint import (
    load_checkpoint,
    load_model,
    model_id,
    save_checkpoint,
    state_dict_for_export,
)
from SemiSupCardiacSegLib.errors import InputError
from SemiSupCardiacSegLib.inference.settings import InferenceSettings
from SemiSupCardiacSegLib.model_meta import META_VERSION, ModelMeta
from SemiSupCardiacSegLib.networks import VNet, VNetConfig


def _payload(net, dtype="float32"):
    sd = state_dict_for_export(net, dtype)
    return {
        "kind": "model",
        "arch": "vnet",
        "network": net.config.to_dict(),
        "state_dict": sd,
        "preprocessing": {"spacing": [1.25] * 3, "normalization": "zscore"},
        "patch_size": [16, 16, 16],
        "labels": {"1": "left atrium"},
        "method": "sassnet",
        "validation": {"dice": 0.5},
        "model_id": model_id(sd),
    }


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_rebuilds_the_same_network(tmp_path, dtype):
    torch.manual_seed(0)
    net = VNet(VNetConfig(n_filters=2)).eval()
    save_checkpoint(tmp_path / "m.pt", _payload(net, dtype))
    loaded, meta = load_model(tmp_path / "m.pt")
    assert meta.labels == {1: "left atrium"} and meta.validation["dice"] == 0.5 and meta.meta_version == 0
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        a, b = net(x)["seg"], loaded(x)["seg"]
    tol = 1e-6 if dtype == "float32" else 2e-2
    assert torch.allclose(a, b, atol=tol)
    assert next(loaded.parameters()).dtype == torch.float32


def test_pickle_that_executes_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": "x", "evil": Evil()}, f)
    with pytest.raises(InputError, match="not a loadable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_truncated_and_foreign_checkpoints(tmp_path):
    net = VNet(VNetConfig(n_filters=2))
    save_checkpoint(tmp_path / "m.pt", _payload(net))
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(InputError, match="format tag"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_architecture_mismatch_is_named(tmp_path):
    net = VNet(VNetConfig(n_filters=2))
    payload = _payload(net)
    payload["network"] = {**payload["network"], "n_filters": 4}
    save_checkpoint(tmp_path / "m.pt", payload)
    with pytest.raises(InputError, match="do not fit"):
        load_model(tmp_path / "m.pt")


def test_atomic_write_leaves_previous_file_on_failure(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")
    from SemiSupCardiacSegLib.atomic import atomic_path

    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary left behind
    with pytest.raises(FileExistsError):
        atomic_write_text(target, "new", overwrite=False)


def test_model_payload_from_resume_keeps_weights_and_drops_training_state(tmp_path):
    from SemiSupCardiacSegLib.checkpoint import RESUME_ONLY_KEYS, model_payload_from_resume

    resume = {
        "kind": "resume",
        "state_dict": {"w": torch.ones(2)},
        "method_state": {},
        "optimizers": {},
        "torch_rng": torch.get_rng_state(),
        "history": {},
        "config": "{}",
        "iteration": 7,
    }
    model = model_payload_from_resume(resume)
    assert model["kind"] == "model" and model["iteration"] == 7 and torch.equal(model["state_dict"]["w"], torch.ones(2))
    assert not set(RESUME_ONLY_KEYS) & set(model)
    assert resume["kind"] == "resume"  # the input is not modified


def test_export_model_adds_tta_and_the_measured_quality_flag(trained, tmp_path, capsys):
    import json
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "Training"))
    import export_model

    src = trained / "model.pt"
    _, meta = load_model(src)
    out = tmp_path / "shipped.pt"
    args = ["--model", str(src), "--out", str(out), "--tta-rot90", "--deterministic-mask", "--choice", "why"]
    assert meta.inference.deterministic_mask is False and export_model.main(args) == 0
    _, new = load_model(out)
    assert new.model_id == meta.model_id and new.inference.tta_rot90 is True and new.meta_version == META_VERSION
    assert new.inference.deterministic_mask is True
    assert InferenceSettings.from_meta(new).deterministic_mask is True
    assert new.inference.tta_flip_axes == meta.inference.tta_flip_axes and new.inference_choice == "why"
    bench = {
        "command": "python benchmarks/uncertainty_quality.py",
        "n_cases": 3,
        "n_samples": 3,
        "model": {"id": meta.model_id, "mc_samples": 10, "mc_scope": "decoder"},
        "suggested_flag": {
            "score": "entropy_per_volume",
            "threshold": 0.61234,
            "youden": 0.8,
            "flagged": 1,
            "flagged_below": 1,
            "below": 1,
        },
    }
    (tmp_path / "q.json").write_text(json.dumps(bench))
    args = ["--model", str(out), "--out", str(out), "--quality", str(tmp_path / "q.json")]
    assert export_model.main(args) == 2 and "--overwrite" in capsys.readouterr().err  # never replaced silently
    assert export_model.main(args + ["--overwrite"]) == 0
    _, flagged = load_model(out)
    assert flagged.quality.threshold == 0.612 and flagged.quality.min_mc_samples == 10
    assert flagged.inference.tta_rot90 is True and flagged.inference.deterministic_mask  # kept from the first export
    # The cross-validated flag-all rule: its threshold (just under a case's score) is rounded down.
    cv = {"folds": 4, "n_below_flagged": 2, "n_below": 3, "mean_spearman_test": 0.8}
    flag_all = {**bench, "cross_validation": cv}
    flag_all["suggested_flag"] = {**bench["suggested_flag"], "threshold": 0.61289, "rule": "just under ..."}
    del flag_all["suggested_flag"]["youden"]
    (tmp_path / "all.json").write_text(json.dumps(flag_all))
    assert (
        export_model.main(
            ["--model", str(out), "--out", str(out), "--quality", str(tmp_path / "all.json"), "--overwrite"]
        )
        == 0
    )
    _, flagged = load_model(out)
    assert flagged.quality.threshold == 0.612 and "4-fold cross-validation" in flagged.quality.source
    (tmp_path / "other.json").write_text(json.dumps({**bench, "model": {**bench["model"], "id": "0123456789ab"}}))
    assert (
        export_model.main(
            ["--model", str(src), "--out", str(tmp_path / "x.pt"), "--quality", str(tmp_path / "other.json")]
        )
        == 2
    )
    assert "belongs to other weights" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


def test_model_meta_round_trips_a_dict_payload_and_checks_it_on_load(tmp_path):
    net = VNet(VNetConfig(n_filters=2))
    payload = _payload(net)
    meta = ModelMeta.from_dict(payload, "m.pt")
    assert meta.meta_version == 0 and meta.num_classes == 2 and meta.patch_size == (16, 16, 16)
    again = ModelMeta.from_dict(meta.to_dict(), "m.pt")
    assert again == meta.__class__(**{**meta.__dict__, "meta_version": META_VERSION})
    assert again.to_dict() == meta.to_dict() and meta.to_dict()["meta_version"] == META_VERSION
    # Written back: loads the same, with its version.
    save_checkpoint(tmp_path / "v1.pt", {**meta.to_dict(), "state_dict": payload["state_dict"]})
    assert load_model(tmp_path / "v1.pt")[1].meta_version == META_VERSION
    for bad, match in (
        ({**payload, "colour": "red"}, "bad.pt: unknown metadata key 'colour'"),
        ({k: v for k, v in payload.items() if k != "labels"}, "bad.pt: checkpoint has no 'labels'"),
        ({**payload, "meta_version": META_VERSION + 1}, "bad.pt: metadata version"),
        ({**payload, "inference": {"tta_flip": [0]}}, "bad.pt: unknown key 'inference.tta_flip'"),
        ({**payload, "quality": {"score": "x"}}, "bad.pt: 'quality' must be an object with a score and a threshold"),
        ({**payload, "labels": {"2": "x"}}, "bad.pt: 'labels' must map label values 1..1"),
    ):
        save_checkpoint(tmp_path / "bad.pt", bad)
        with pytest.raises(InputError, match=match):
            load_model(tmp_path / "bad.pt")


def test_rot90_tta_supersedes_in_plane_flips_and_refuses_others():
    """tta_rot90's 8 in-plane symmetries hold every flip of axes 0 and 1 (the shipped cine model
    carries both fields: nothing of its flips is lost); a flip of axis 2 with rot90 would be
    ignored, so it is refused on load, naming the file."""
    payload = _payload(VNet(VNetConfig(n_filters=2)))
    both = ModelMeta.from_dict({**payload, "inference": {"tta_flip_axes": [1, 0], "tta_rot90": True}}, "c.pt")
    assert both.inference.tta_rot90 and both.inference.tta_flip_axes == (0, 1)
    with pytest.raises(
        InputError, match=r"c.pt: inference: tta_rot90 runs the 8 symmetries.*\[0, 1, 2\] would be ignored"
    ):
        ModelMeta.from_dict({**payload, "inference": {"tta_flip_axes": [0, 1, 2], "tta_rot90": True}}, "c.pt")


@pytest.mark.parametrize("name", ["la", "cine"])
def test_shipped_checkpoints_load_with_their_metadata(name):
    """The shipped files load, whichever metadata version wrote them (cine: 0, the files before
    versioning; la: the current one), with the fields the product relies on."""
    from SemiSupCardiacSegLib.checkpoint import read_model_meta
    from SemiSupCardiacSegLib.shipped import SHIPPED

    meta, _ = read_model_meta(name)
    assert meta.meta_version in (0, META_VERSION) and list(meta.labels.values()) == list(SHIPPED[name].labels)
    assert meta.inference.tta_flip_axes == (0, 1) and meta.inference.tta_rot90 is (name == "cine")
    assert meta.quality is not None and meta.quality.min_mc_samples == 10
