"""Training arithmetic (config ``precision``, ``training.precision``): what "auto" picks, that every
method's losses under bf16 autocast are float32 and agree with float32 ones, and the run's record."""

import json
import warnings

import pytest
import torch
from conftest import TINY
from test_losses_methods import TINY as TINY_METHOD
from test_losses_methods import TINY_2D, _batch, _batch_2d

from SemiSupCardiacSegLib.config_check import validate_config
from SemiSupCardiacSegLib.errors import InputError, InputWarning
from SemiSupCardiacSegLib.methods import METHODS, get_method
from SemiSupCardiacSegLib.training import DEFAULTS, Trainer, merge_config
from SemiSupCardiacSegLib.training.precision import cpu_has_bf16_units, resolve_precision, step_autocast

CPU = torch.device("cpu")


def test_auto_follows_the_hardware_and_explicit_values_are_kept():
    assert resolve_precision("float32", CPU) == "float32"
    assert resolve_precision("bfloat16", CPU) == "bfloat16"
    assert resolve_precision("auto", CPU) == ("bfloat16" if cpu_has_bf16_units() else "float32")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("float16", CPU)
    with pytest.raises(InputError, match="'precision' must be auto, float32 or bfloat16"):
        validate_config(merge_config(DEFAULTS, {"precision": "half"}))


def _losses(name: str, precision: str) -> tuple[dict, dict]:
    two_d = name in ("bmtctl", "mtn")
    cfg = dict(TINY_2D if two_d else TINY_METHOD)
    cfg["network"] = {**cfg["network"], "n_filters": 4, "dropout": 0.0}  # no dropout: the same function twice
    cfg["method_params"] = (
        {"disc_filters": 4, "mc_passes": 2}
        if name in ("sassnet", "mtctl", "bmtctl")
        else ({"mc_passes": 2} if name == "uamt" else {})
    )
    torch.manual_seed(0)
    m = get_method(name)(cfg)
    batch = _batch_2d() if two_d else _batch()
    batch["image"] = batch["label"].unsqueeze(1).float() + 0.3 * torch.randn(
        batch["image"].shape, generator=torch.Generator().manual_seed(1)
    )
    torch.manual_seed(1)  # UA-MT's teacher noise: the same draws in both precisions
    with step_autocast(precision, CPU):
        out = m.step_losses(batch, iteration=100)
        with torch.no_grad():
            net_out = m.model(batch["image"])
    return {s.optimizer: s.loss for s in out.steps}, net_out


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_under_bf16_gives_float32_losses_close_to_float32(name):
    ref, _ = _losses(name, "float32")
    low, net_out = _losses(name, "bfloat16")
    assert all(v.dtype == torch.float32 for v in net_out.values())  # outputs leave the network as float32
    assert set(low) == set(ref)
    for key, loss in low.items():
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        # bf16 keeps ~3 significant digits in the convolutions: the losses agree to a few percent
        assert loss.item() == pytest.approx(ref[key].item(), rel=0.05, abs=0.02), (key, loss.item(), ref[key].item())


def test_run_records_the_resolved_precision_and_warns_when_a_resume_changes_it(phantom_folder, tmp_path):
    cfg = {**TINY, "data": str(phantom_folder), "iterations": 4, "validation": {"last": 0}, "checkpoint_every": 100}
    out = tmp_path / "run"
    Trainer({**cfg, "precision": "bfloat16"}, out, device="cpu", progress=False).run(stop_after=2)
    assert json.loads((out / "config.json").read_text())["precision"] == "bfloat16"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer({**cfg, "precision": "float32"}, out, device="cpu", progress=False).run(resume=True)
    said = [str(w.message) for w in caught if issubclass(w.category, InputWarning)]
    assert any("ran in bfloat16 and continues in float32" in s for s in said), said
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert max(r["iteration"] for r in logs if "loss" in r) == 4
    auto = tmp_path / "auto"
    Trainer({**cfg, "iterations": 1}, auto, device="cpu", progress=False).run()
    assert json.loads((auto / "config.json").read_text())["precision"] == resolve_precision("auto", CPU)
