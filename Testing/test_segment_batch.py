"""`segment FOLDER|LIST --out OUT`: each case into OUT/<case>/, a failing case reported and skipped,
a rerun skipping complete cases, one summary (CSV + JSON) rewritten after each case; Ctrl-C then
a rerun loses nothing done."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, sigint_as_at_a_terminal

from SemiSupCardiacSegLib.cli import main as cli_main
from SemiSupCardiacSegLib.io import write_volume
from SemiSupCardiacSegLib.phantoms import make_la_phantom
from SemiSupCardiacSegLib.volume import Volume


def _cases(folder: Path, n: int, shape=(48, 44, 24)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ph = make_la_phantom(shape=shape, spacing=(2.0, 2.0, 2.5), seed=20 + i)
        write_volume(Volume(ph.image, ph.spacing), folder / f"case{i}.nrrd")
    return folder


def _argv(inp, out, trained, *extra):
    return [
        "segment",
        str(inp),
        "--out",
        str(out),
        "--model",
        str(trained / "model.pt"),
        "--mc-samples",
        "2",
        "--device",
        "cpu",
        *extra,
    ]


def test_batch_with_a_corrupt_case_reports_it_and_does_the_rest(trained, tmp_path, capsys):
    inp = _cases(tmp_path / "in", 2)
    (inp / "case1.nrrd").rename(inp / "case2.nrrd")
    (inp / "case1.nrrd").write_bytes(b"NRRD0004\nnot really an image\n")  # corrupt, sorted in the middle
    out = tmp_path / "out"
    code = cli_main(_argv(inp, out, trained, "--quiet"))
    captured = capsys.readouterr()
    assert code == 1  # some case failed; the others are done
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: case1:")
    assert (out / "case0" / "report.json").is_file() and (out / "case2" / "report.json").is_file()
    assert not (out / "case1").exists()
    assert json.loads(captured.out.strip().splitlines()[-1]) == {
        "out": str(out),
        "cases": 3,
        "complete": 2,
        "failed": 1,
        "summary": str(out / "summary.csv"),
    }
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["case"]: r for r in summary["cases"]}
    assert summary["n_complete"] == 2 and summary["n_failed"] == 1
    assert rows["case1"]["status"] == "failed" and rows["case1"]["error"] and rows["case1"]["volumes_ml"] == {}
    for name in ("case0", "case2"):
        report = json.loads((out / name / "report.json").read_text())
        assert rows[name]["status"] == "done" and rows[name]["error"] is None and rows[name]["seconds"] > 0
        assert rows[name]["volumes_ml"]["left atrium"] == pytest.approx(
            report["structures"]["left atrium"]["volume_ml"], abs=1e-3
        )
    table = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["case"] for r in table] == ["case0", "case1", "case2"]
    assert set(table[0]) >= {"case", "status", "left atrium (mL)", "quality", "seconds", "error"}
    assert table[1]["error"] and table[1]["left atrium (mL)"] == ""
    # A rerun does not recompute the done cases (their files keep their mtimes); the corrupt one is retried.
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.nrrd")}
    code = cli_main(_argv(inp, out, trained, "--quiet"))
    assert code == 1 and {p: p.stat().st_mtime_ns for p in out.rglob("*.nrrd")} == mtimes
    rows = {r["case"]: r for r in json.loads((out / "summary.json").read_text())["cases"]}
    assert rows["case0"]["status"] == "done earlier" and rows["case0"]["seconds"] > 0
    assert rows["case1"]["status"] == "failed"
    # Repaired, the rerun does only that case: exit code 0.
    write_volume(
        Volume(make_la_phantom(shape=(48, 44, 24), spacing=(2.0, 2.0, 2.5), seed=7).image, (2.0, 2.0, 2.5)),
        inp / "case1.nrrd",
        overwrite=True,
    )
    assert cli_main(_argv(inp, out, trained, "--quiet")) == 0
    assert (out / "case1" / "report.json").is_file()
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.nrrd") if p in mtimes} == mtimes


def test_batch_from_a_list_and_refusals(trained, tmp_path, capsys):
    inp = _cases(tmp_path / "in", 2)
    lst = tmp_path / "in" / "some.list"
    lst.write_text("case1\n")
    out = tmp_path / "out"
    assert cli_main(_argv(lst, out, trained, "--quiet")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["case1", "summary.csv", "summary.json"]
    capsys.readouterr()
    assert cli_main(_argv(inp, out, trained, "--quiet", "--es", str(inp / "case0.nrrd"))) == 2
    assert "--es" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(_argv(tmp_path / "empty", tmp_path / "o2", trained, "--quiet")) == 2
    assert "no images found" in capsys.readouterr().err


def test_batch_interrupted_then_rerun_completes_the_rest(trained, tmp_path):
    inp = _cases(tmp_path / "in", 5, shape=(72, 64, 32))
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "SemiSupCardiacSegLib", *_argv(inp, out, trained, "--mc-samples", "4", "--quiet")]
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_at_a_terminal,
    )
    deadline = time.monotonic() + 300
    while not (out / "summary.json").exists():  # written right after the first case is complete
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    done = sorted(p.parent.name for p in out.glob("*/report.json"))
    assert 1 <= len(done) < 5
    assert not [
        p.name for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name
    ]  # the case in progress left nothing
    summary = json.loads((out / "summary.json").read_text())
    assert {r["case"] for r in summary["cases"] if r["status"] == "done"} >= set(done[:1])
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/report.json")}
    rerun = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.parent.name for p in out.glob("*/report.json")) == [f"case{i}" for i in range(5)]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # the cases done before were not redone
    rows = {r["case"]: r["status"] for r in json.loads((out / "summary.json").read_text())["cases"]}
    assert all(rows[name] == "done earlier" for name in done) and len(rows) == 5
