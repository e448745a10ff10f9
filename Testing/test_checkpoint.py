"""Checkpoints: round trip with metadata, weights-only loading, clear errors for bad files, atomic writes."""

import os
import pickle

import pytest
import torch

from SemiSupCardiacSegLib.atomic import atomic_write_text
from SemiSupCardiacSegLib.checkpoint import load_checkpoint, load_model, model_id, save_checkpoint, state_dict_for_export
from SemiSupCardiacSegLib.io import InputError
from SemiSupCardiacSegLib.networks import VNet, VNetConfig


def _payload(net, dtype="float32"):
    sd = state_dict_for_export(net, dtype)
    return {"kind": "model", "arch": "vnet", "network": net.config.to_dict(), "state_dict": sd,
            "preprocessing": {"spacing": [1.25] * 3, "normalization": "zscore"}, "patch_size": [16, 16, 16],
            "labels": {"1": "left atrium"}, "method": "sassnet", "validation": {"dice": 0.5}, "model_id": model_id(sd)}


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

    resume = {"kind": "resume", "state_dict": {"w": torch.ones(2)}, "method_state": {}, "optimizers": {},
              "torch_rng": torch.get_rng_state(), "history": {}, "config": "{}", "iteration": 7}
    model = model_payload_from_resume(resume)
    assert model["kind"] == "model" and model["iteration"] == 7 and torch.equal(model["state_dict"]["w"], torch.ones(2))
    assert not set(RESUME_ONLY_KEYS) & set(model)
    assert resume["kind"] == "resume"  # the input is not modified
