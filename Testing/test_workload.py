"""Rule 8, time and memory predicted before work: a model grid far larger than the input warns with
the windows and the estimated time and needs --allow-large; the memory check honours the
container's (cgroup) limit, not only /proc/meminfo."""

from __future__ import annotations

import numpy as np
import pytest

from SemiSupCardiacSegLib import memory
from SemiSupCardiacSegLib.cli import main as cli_main
from SemiSupCardiacSegLib.errors import InputError
from SemiSupCardiacSegLib.inference import (
    LARGE_GRID_FACTOR,
    Workload,
    cgroup_available_bytes,
    check_workload,
    plan_workload,
    predictor,
    window_grid,
    workload,
)
from SemiSupCardiacSegLib.io import write_volume
from SemiSupCardiacSegLib.preprocessing import Preprocessing, to_model_space
from SemiSupCardiacSegLib.volume import Volume

LA_PREP = Preprocessing(spacing=(0.625, 0.625, 0.625))
LA_PATCH = (112, 112, 80)


def _localizer(shape=(64, 64, 20), spacing=(5.0, 5.0, 5.0)) -> Volume:
    rng = np.random.default_rng(0)
    return Volume(rng.normal(size=shape).astype(np.float32), spacing)


def test_a_5mm_localizer_for_the_la_model_is_planned_as_large_without_running_anything():
    vol = _localizer()
    work = plan_workload(vol, LA_PREP, LA_PATCH, 0.5, mc_samples=10, pass_sets=4)
    assert work.model_shape == (512, 512, 160) and work.grid_factor == pytest.approx(512)
    # Windows at stride 56 x 56 x 40 over the 0.625 mm grid: 9 x 9 x 3 per pass set, 4 flips.
    assert work.windows == 9 * 9 * 3 and work.is_large
    probe_calls = []

    def probe():
        probe_calls.append(1)
        return 0.5, 0.25  # encoder, decoder seconds of one window

    with pytest.raises(InputError) as err:
        check_workload(work, allow_large=False, probe=probe)
    text = str(err.value)
    assert "--allow-large" in text and f"{work.windows * 4} windows" in text and "512 times" in text
    # 243 windows x (4 encoder passes x 0.5 s + 10 decoder passes x 0.25 s) = 1094 s, about 18 min.
    assert "about 18 min" in text and probe_calls == [1]


def test_allow_large_warns_with_the_estimate(capsys):
    work = plan_workload(_localizer(), LA_PREP, LA_PATCH, 0.5, mc_samples=1, pass_sets=1)
    seconds = check_workload(work, allow_large=True, probe=lambda: (0.1, 0.1))
    assert seconds == pytest.approx(work.windows * 0.2)
    assert capsys.readouterr().err.startswith("warning: the model grid 512 x 512 x 160")


def test_an_ordinary_la_volume_is_not_large_and_costs_no_probe():
    vol = Volume(np.zeros((576, 576, 88), np.float32), (0.625, 0.625, 1.25))
    work = plan_workload(vol, LA_PREP, LA_PATCH, 0.5, mc_samples=10, pass_sets=4)
    assert work.grid_factor == pytest.approx(2.0) and not work.is_large
    assert check_workload(work, probe=lambda: pytest.fail("probe run for an ordinary volume")) is None


def test_plan_matches_the_model_grid_and_the_windows_really_run():
    vol = Volume(
        np.random.default_rng(1).normal(size=(30, 20, 12)).astype(np.float32),
        (1.5, 2.0, 3.0),
        direction=np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
    )
    prep = Preprocessing(spacing=(1.0, 1.0, 1.0))
    work = plan_workload(vol, prep, (16, 16, 8), 0.5, mc_samples=1)
    assert work.model_shape == to_model_space(vol, prep).array.shape
    padded = tuple(max(n, p) for n, p in zip(work.model_shape, (16, 16, 8)))
    assert work.windows == len(window_grid(padded, (16, 16, 8), 0.5))


def test_large_grid_threshold_needs_both_the_factor_and_many_windows():
    assert not Workload((10, 10, 10), (80, 80, 80), 8, 1, 1).is_large  # 512x, but 8 windows: seconds
    assert not Workload((100, 100, 100), (150, 150, 150), 1000, 1, 1).is_large  # many windows, not upsampled
    assert Workload((10, 10, 10), (80, 80, 80), 200, 1, 1).grid_factor > LARGE_GRID_FACTOR


def test_segment_refuses_a_coarse_volume_before_any_work_and_runs_it_with_allow_large(
    trained, tmp_path, capsys, monkeypatch
):
    # The tiny model works at 2.5 mm with 32 x 32 x 16 windows; a 20 mm volume is upsampled 8x per axis.
    inp = write_volume(_localizer(shape=(10, 10, 6), spacing=(20.0, 20.0, 20.0)), tmp_path / "coarse.nrrd")
    ran = []
    real = predictor.predict_model_space
    monkeypatch.setattr(predictor, "predict_model_space", lambda *a, **k: ran.append(1) or real(*a, **k))
    argv = [
        "segment",
        str(inp),
        "--out",
        str(tmp_path / "out"),
        "--model",
        str(trained / "model.pt"),
        "--mc-samples",
        "1",
        "--device",
        "cpu",
        "--quiet",
        "--no-tta",
    ]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the model grid 80 x 80 x 48") and "--allow-large" in err and "windows" in err
    assert ran == [] and not (tmp_path / "out").exists()
    assert cli_main(argv + ["--allow-large"]) == 0
    assert ran == [1] and "warning: the model grid" in capsys.readouterr().err


# ----------------------------------------------------------------------------- cgroup memory limit
def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_limit_minus_usage_less_inactive_cache(tmp_path):
    root = tmp_path / "cg"
    proc = tmp_path / "proc_cgroup"
    _write(proc, "0::/\n")
    _write(root / "memory.max", f"{4 * 2**30}\n")
    _write(root / "memory.current", f"{3 * 2**30}\n")
    _write(root / "memory.stat", f"anon 123\ninactive_file {2**30}\nactive_file 5\n")
    assert cgroup_available_bytes(root, proc) == 2 * 2**30  # 4 GiB - (3 GiB - 1 GiB reclaimable)
    _write(root / "memory.max", "max\n")
    assert cgroup_available_bytes(root, proc) is None  # no limit


def test_cgroup_v2_in_the_process_own_group(tmp_path):
    root = tmp_path / "cg"
    proc = tmp_path / "proc_cgroup"
    _write(proc, "0::/user.slice/job-7\n")
    _write(root / "memory.max", "max\n")
    _write(root / "user.slice" / "job-7" / "memory.max", f"{2**30}\n")
    _write(root / "user.slice" / "job-7" / "memory.current", f"{2**28}\n")
    assert cgroup_available_bytes(root, proc) == 2**30 - 2**28


def test_cgroup_v1_limit_and_its_unlimited_value(tmp_path):
    root = tmp_path / "cg"
    proc = tmp_path / "proc_cgroup"
    _write(proc, "4:memory:/docker/abc\n1:cpu:/\n")
    mem = root / "memory" / "docker" / "abc"
    _write(mem / "memory.limit_in_bytes", f"{2 * 2**30}\n")
    _write(mem / "memory.usage_in_bytes", f"{2**30}\n")
    _write(mem / "memory.stat", f"cache 7\ntotal_inactive_file {2**29}\n")
    assert cgroup_available_bytes(root, proc) == 2 * 2**30 - 2**29
    _write(mem / "memory.limit_in_bytes", "9223372036854771712\n")  # what v1 says for "no limit"
    assert cgroup_available_bytes(root, proc) is None
    assert cgroup_available_bytes(tmp_path / "missing", tmp_path / "missing_proc") is None


def test_memory_check_uses_the_smaller_of_host_and_container(monkeypatch):
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 64 * 2**30)
    monkeypatch.setattr(memory, "cgroup_available_bytes", lambda: 2**30)
    assert memory.available_memory_bytes() == 2**30
    with pytest.raises(InputError, match="1.0 GiB available"):
        workload.check_memory((576, 576, 88), (576, 576, 176), 2)
    monkeypatch.setattr(memory, "cgroup_available_bytes", lambda: None)
    assert memory.available_memory_bytes() == 64 * 2**30
    workload.check_memory((576, 576, 88), (576, 576, 176), 2)
