"""Training/train.py as a headless Slicer runs it: every failure is one ``error:`` line on stderr and
exit code 2 (any exception type), the traceback only with ``--debug``, and the script always ends
with ``SystemExit(code)`` (``Slicer --no-main-window --python-script`` exits only on that)."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "Training" / "train.py"


def _train(args, cwd, prelude: str = ""):
    if prelude:  # run the file the way Slicer does: runpy with __name__ == "__main__"
        cmd = [
            sys.executable,
            "-c",
            prelude + f"import runpy; sys.argv = [{str(TRAIN)!r}] + sys.argv[1:]; "
            f"runpy.run_path({str(TRAIN)!r}, run_name='__main__'); print('NOT REACHED')",
            *args,
        ]
    else:
        cmd = [sys.executable, str(TRAIN), *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, cwd=cwd, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)}
    )


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "error:" in ln]


def test_corrupt_h5_case_is_one_error_line(phantom_folder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantom_folder, data)
    blob = (data / "case1.h5").read_bytes()
    (data / "case1.h5").write_bytes(blob[: len(blob) // 3])  # truncated
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**TINY, "data": str(data), "iterations": 2}))
    proc = _train(["--config", str(cfg), "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: case1.h5: cannot read h5 file"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_config_key_is_one_error_line_traceback_only_with_debug(phantom_folder, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**TINY, "data": str(phantom_folder), "network": {**TINY["network"], "n_filterz": 4}}))
    args = ["--config", str(cfg), "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress"]
    proc = _train(args, tmp_path)
    assert proc.returncode == 2
    lines = _error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "n_filterz" in lines[0] and str(cfg) in lines[0], (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr
    dbg = _train(args + ["--debug"], tmp_path)
    assert dbg.returncode == 2 and "Traceback" in dbg.stderr
    assert len(_error_lines(dbg.stderr)) == 1 and dbg.stderr.strip().splitlines()[-1] == lines[0]


def test_bad_option_and_unreadable_config(tmp_path):
    bad = _train(["--out", str(tmp_path / "o"), "--iterations", "many"], tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: argument --iterations: invalid int value: 'many' (see --help)"
    ]
    missing = _train(["--config", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")], tmp_path)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert missing.stderr.startswith(f"error: cannot read config {tmp_path / 'nope.json'}")


def test_good_tiny_run_through_runpy_exits_zero_without_tqdm(phantom_folder, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps(
            {**TINY, "data": str(phantom_folder), "iterations": 2, "validation": {"last": 0}, "checkpoint_every": 2}
        )
    )
    # As in Slicer (runpy, __name__ == "__main__"), without tqdm (Slicer has none): progress printout.
    proc = _train(
        ["--config", str(cfg), "--out", str(tmp_path / "run"), "--device", "cpu", "--threads", "1"],
        tmp_path,
        prelude="import sys; sys.modules['tqdm'] = None; ",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "NOT REACHED" not in proc.stdout  # the script ended with SystemExit
    assert json.loads(proc.stdout.strip().splitlines()[-1])["iterations"] == 2
    assert (tmp_path / "run" / "model.pt").is_file() and not _error_lines(proc.stderr)
    assert "train sassnet: 100% (2/2)" in proc.stderr


def test_run_path_raises_system_exit_in_process(tmp_path, monkeypatch, capsys):
    """Slicer executes the file in its own interpreter; the end of the script must raise SystemExit."""
    monkeypatch.setattr(
        sys, "argv", [str(TRAIN), "--config", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")]
    )
    with pytest.raises(SystemExit) as failed:
        runpy.run_path(str(TRAIN), run_name="__main__")
    assert failed.value.code == 2
    assert capsys.readouterr().err.startswith("error: cannot read config")
    monkeypatch.setattr(sys, "argv", [str(TRAIN), "--help"])
    with pytest.raises(SystemExit) as helped:
        runpy.run_path(str(TRAIN), run_name="__main__")
    assert helped.value.code == 0
    # The main guard ends with an unconditional, top-level-of-the-guard SystemExit.
    src = TRAIN.read_text().rstrip().splitlines()
    guard = max(i for i, ln in enumerate(src) if ln.startswith('if __name__ == "__main__":'))
    body = [ln for ln in src[guard + 1 :] if ln.strip() and not ln.strip().startswith("#")]
    assert body == ["    raise SystemExit(main())"]
