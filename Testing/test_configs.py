"""Every registered method has a paper configuration that states its sources and builds the method."""

import pytest
from conftest import REPO

from SemiSupCardiacSegLib.config_files import CONFIGS, load_config
from SemiSupCardiacSegLib.methods import METHODS, get_method
from SemiSupCardiacSegLib.training import DEFAULTS, merge_config


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_has_paper_config_with_sources(name):
    path = CONFIGS / f"{name}.json"
    assert path.is_file(), f"configs/{name}.json missing: `train.py --method {name}` loads it"
    cfg = load_config(path)  # composed: its protocol and method files, its own keys last
    assert cfg["method"] == name
    sources = cfg.get("_sources", {})
    assert sources.get("method_params") or name == "supervised", "method_params need a stated source"
    assert all(isinstance(v, str) and len(v) > 10 for v in sources.values())
    # The configuration builds its method (network shrunk so the test stays fast).
    small = merge_config(DEFAULTS, {**cfg, "network": {**cfg.get("network", {}), "n_filters": 2}})
    method = get_method(name)(small)
    assert method.arch == cfg.get("arch", "vnet")


def test_train_py_method_alone_uses_its_paper_config(tmp_path):
    import sys

    sys.path.insert(0, str(REPO / "Training"))
    import train

    args = train.parse_args(["--method", "bmtctl", "--out", str(tmp_path / "o"), "--iterations", "5"])
    cfg = train.build_config(args)
    assert cfg["method"] == "bmtctl" and cfg["arch"] == "unet2d" and cfg["iterations"] == 5
    assert cfg["network"]["dropout"] == 0.1 and cfg["method_params"]["mc_passes"] == 10
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read config"):
        train.build_config(train.parse_args(["--config", str(bad), "--out", str(tmp_path / "o")]))
