"""config_files.load_config: configs compose (``extends`` in order, own keys last), and every refusal
(cycle, missing file, unknown key) is one InputError naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from SemiSupCardiacSegLib.config_files import CONFIGS, load_config
from SemiSupCardiacSegLib.errors import InputError


def _write(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))
    return path


def test_extends_compose_in_order_and_own_keys_win(tmp_path):
    _write(
        tmp_path / "parts" / "a.json", {"iterations": 100, "seed": 1, "optim": {"model": {"type": "adam", "lr": 0.1}}}
    )
    _write(tmp_path / "parts" / "b.json", {"seed": 2, "optim": {"model": {"lr": 0.2}}, "labeled": 4})
    top = _write(
        tmp_path / "top.json",
        {"extends": ["parts/a.json", "parts/b.json"], "labeled": 5, "_comment": "paths relative to this file"},
    )
    cfg = load_config(top)
    assert "extends" not in cfg
    assert cfg["iterations"] == 100  # only a has it
    assert cfg["seed"] == 2  # b, later in the list, wins over a
    assert cfg["labeled"] == 5  # the file's own key wins over both
    assert cfg["optim"] == {"model": {"type": "adam", "lr": 0.2}}  # nested objects merged key by key
    assert load_config(top, {"labeled": 7, "method": "sassnet"})["labeled"] == 7  # overrides merge last


def test_extends_chain_and_single_string(tmp_path):
    _write(tmp_path / "base.json", {"iterations": 10})
    _write(tmp_path / "sub" / "mid.json", {"extends": "../base.json", "seed": 3})
    top = _write(tmp_path / "sub" / "top.json", {"extends": "mid.json"})
    assert load_config(top)["iterations"] == 10 and load_config(top)["seed"] == 3


def test_cycle_is_refused_with_the_file_named(tmp_path):
    a = _write(tmp_path / "a.json", {"extends": "b.json"})
    _write(tmp_path / "b.json", {"extends": "a.json"})
    with pytest.raises(InputError, match="cycle") as err:
        load_config(a)
    assert str(a) in str(err.value) and "b.json" in str(err.value)
    selfish = _write(tmp_path / "self.json", {"extends": "self.json"})
    with pytest.raises(InputError, match="cycle"):
        load_config(selfish)


def test_missing_files_are_refused_with_the_file_named(tmp_path):
    with pytest.raises(InputError, match=f"cannot read config {tmp_path / 'nope.json'}"):
        load_config(tmp_path / "nope.json")
    top = _write(tmp_path / "top.json", {"extends": ["gone.json"]})
    with pytest.raises(InputError) as err:
        load_config(top)
    assert "gone.json" in str(err.value) and f"extended by {top.resolve()}" in str(err.value)
    bad = _write(tmp_path / "bad.json", {"extends": [3]})
    with pytest.raises(InputError, match=f"{bad}: 'extends' must be"):
        load_config(bad)


def test_unknown_keys_refused_after_merging_naming_the_top_file(tmp_path):
    _write(tmp_path / "part.json", {"iteratoins": 5})
    top = _write(tmp_path / "top.json", {"extends": "part.json"})
    with pytest.raises(InputError, match="iteratoins") as err:
        load_config(top)
    assert str(err.value).startswith(f"{top}: ")
    _write(tmp_path / "net_part.json", {"network": {"n_filterz": 2}})
    net = _write(tmp_path / "net.json", {"extends": "net_part.json", "seed": 1})
    with pytest.raises(InputError, match="n_filterz") as err:
        load_config(net)
    assert str(err.value).startswith(f"{net}: ")


def test_every_shipped_config_and_protocol_loads():
    """(methods/ files are parts: a method's options, composed onto a protocol, not trained alone.)"""
    tops = sorted(CONFIGS.glob("*.json"))
    assert len(tops) >= 14
    for path in tops + sorted(CONFIGS.glob("protocols/*.json")):
        assert isinstance(load_config(path), dict), path
