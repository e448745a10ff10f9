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
    assert meta["labels"] == {"1": "left atrium"} and meta["validation"]["dice"] == 0.5
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
    assert export_model.main(["--model", str(src), "--out", str(out), "--tta-rot90", "--choice", "why"]) == 0
    _, new = load_model(out)
    assert new["model_id"] == meta["model_id"] and new["inference"]["tta_rot90"] is True
    assert new["inference"]["tta_flip_axes"] == meta["inference"]["tta_flip_axes"] and new["inference_choice"] == "why"
    bench = {
        "command": "python benchmarks/uncertainty_quality.py",
        "n_cases": 3,
        "n_samples": 3,
        "model": {"id": meta["model_id"], "mc_samples": 10, "mc_scope": "decoder"},
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
    assert flagged["quality"]["threshold"] == 0.612 and flagged["quality"]["min_mc_samples"] == 10
    assert flagged["inference"]["tta_rot90"] is True  # kept from the first export
    (tmp_path / "other.json").write_text(json.dumps({**bench, "model": {**bench["model"], "id": "0123456789ab"}}))
    assert (
        export_model.main(
            ["--model", str(src), "--out", str(tmp_path / "x.pt"), "--quality", str(tmp_path / "other.json")]
        )
        == 2
    )
    assert "belongs to other weights" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
