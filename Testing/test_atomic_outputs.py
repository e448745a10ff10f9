"""Rule 4, outputs all or nothing: `segment` writes its whole set (NRRDs, report.json, montage.png,
es/) beside --out and moves it into place; an error, a full disk or Ctrl-C while writing leaves
the earlier complete set (or nothing) and a rerun works. Also pseudo-label's folder, and the
single files of `evaluate --out` / `indices --out`."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, sigint_as_at_a_terminal

from SemiSupCardiacSegLib import reporting
from SemiSupCardiacSegLib.atomic import atomic_folder, is_complete_set
from SemiSupCardiacSegLib.cli import main as cli_main
from SemiSupCardiacSegLib.io import write_volume
from SemiSupCardiacSegLib.phantoms import make_la_phantom
from SemiSupCardiacSegLib.volume import Volume


def _snapshot(folder: Path) -> dict:
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(
        p.name for p in parent.iterdir() if p.name.startswith(f"{name}.tmp-") or p.name.startswith(f"{name}.old-")
    )


# ----------------------------------------------------------------------------- atomic_folder itself
def test_atomic_folder_fresh_replace_and_failure(tmp_path):
    out = tmp_path / "out"
    with atomic_folder(out) as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "report.json").write_text("{}")
        assert not out.exists()  # nothing visible until the block ends
    assert _snapshot(out) == {"a.txt": b"1", "report.json": b"{}"}
    with pytest.raises(FileExistsError, match="complete output set"):
        with atomic_folder(out):
            pass
    # A failure inside the block: the earlier set stays, the temporary folder goes.
    with pytest.raises(OSError):
        with atomic_folder(out, overwrite=True) as tmp:
            (tmp / "a.txt").write_text("2")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert _snapshot(out) == {"a.txt": b"1", "report.json": b"{}"}
    # Replaced whole: an entry of the earlier set that the new one lacks does not survive ...
    with atomic_folder(out, overwrite=True, owned=lambda name: name.endswith(".txt")) as tmp:
        (tmp / "b.txt").write_text("3")
        (tmp / "report.json").write_text("[]")
    assert _snapshot(out) == {"b.txt": b"3", "report.json": b"[]"}
    # ... unless it is not the set's own (by default: only the new set's names are).
    (out / "notes.md").write_text("mine")
    with atomic_folder(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("4")
        (tmp / "report.json").write_text("{}")
    assert _snapshot(out) == {"b.txt": b"4", "notes.md": b"mine", "report.json": b"{}"}
    assert _leftovers(tmp_path, "out") == []


def test_atomic_folder_keeps_foreign_files_and_replaces_incomplete_leftovers(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "segment_stdout.txt").write_text("log of the parent process")  # the Slicer job's log
    (out / "segmentation.nrrd").write_text("leftover of an interrupted run, no report.json")
    owned = reporting.SEGMENT_SET.__contains__
    with atomic_folder(out, owned=owned) as tmp:  # no --overwrite needed: nothing complete is lost
        (tmp / "probability.nrrd").write_text("new")
        (tmp / "report.json").write_text("{}")
    assert _snapshot(out) == {
        "segment_stdout.txt": b"log of the parent process",
        "probability.nrrd": b"new",
        "report.json": b"{}",
    }
    with atomic_folder(out, overwrite=True, owned=owned) as tmp:
        (tmp / "segmentation.nrrd").write_text("newer")
        (tmp / "report.json").write_text("[]")
    assert _snapshot(out) == {
        "segment_stdout.txt": b"log of the parent process",
        "segmentation.nrrd": b"newer",
        "report.json": b"[]",
    }
    assert _leftovers(tmp_path, "out") == []


def test_atomic_folder_without_rename_exchange_falls_back(tmp_path, monkeypatch):
    from SemiSupCardiacSegLib import atomic

    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # e.g. not Linux, or a file system without it
    out = tmp_path / "out"
    for text in ("1", "2"):
        with atomic_folder(out, overwrite=True) as tmp:
            (tmp / "report.json").write_text(text)
    assert _snapshot(out) == {"report.json": b"2"} and _leftovers(tmp_path, "out") == []


# ----------------------------------------------------------------------------- segment
@pytest.fixture(scope="module")
def small_input(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("atomic_in")
    ph = make_la_phantom(shape=(48, 44, 24), spacing=(2.0, 2.0, 2.5), seed=3)
    return write_volume(Volume(ph.image, ph.spacing), folder / "in.nrrd")


def _segment(trained, inp, out, *extra) -> int:
    return cli_main(
        [
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
            "--quiet",
            *extra,
        ]
    )


def _failing_writer(after: int):
    """write_volume that raises ENOSPC at its ``after``+1-th call (a disk filling up mid-set)."""
    real = reporting.write_volume
    calls = {"n": 0}

    def write(volume, path, **kw):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(volume, path, **kw)

    return write


def test_segment_full_disk_mid_set_keeps_the_earlier_state(trained, small_input, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    # Fresh folder, the disk fills after two files: nothing at --out, and no temporary folder left.
    monkeypatch.setattr(reporting, "write_volume", _failing_writer(2))
    assert _segment(trained, small_input, out) == 2
    err = capsys.readouterr().err
    assert "no space left on device" in err and f"{out}/" in err and ".tmp-" not in err  # names --out's file
    assert not out.exists() and _leftovers(tmp_path, "out") == []
    monkeypatch.undo()
    # A rerun works (before: "already holds segmentation outputs" on the two orphans).
    assert _segment(trained, small_input, out, "--montage") == 0
    before = _snapshot(out)
    assert set(before) >= set(reporting.OUTPUT_FILES) | {"montage.png"}
    # --overwrite that fails part way: the earlier complete set, byte for byte.
    monkeypatch.setattr(reporting, "write_volume", _failing_writer(3))
    assert _segment(trained, small_input, out, "--overwrite", "--mc-samples", "3") == 2
    assert _snapshot(out) == before and _leftovers(tmp_path, "out") == []
    monkeypatch.undo()
    # --overwrite that succeeds: the new complete set, without the earlier montage beside it.
    assert _segment(trained, small_input, out, "--overwrite", "--mc-samples", "3") == 0
    after = _snapshot(out)
    assert "montage.png" not in after and set(after) == set(reporting.OUTPUT_FILES)
    assert json.loads(after["report.json"])["timings_s"]["mc_samples"] == 3


def test_segment_es_subfolder_is_part_of_the_set(trained, small_input, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = reporting.write_output_files

    def main_set_fails(pred, report, folder, compact=False):
        if Path(folder).name != "es":  # es/ is written first, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(folder))
        return real(pred, report, folder, compact)

    monkeypatch.setattr(reporting, "write_output_files", main_set_fails)
    assert _segment(trained, small_input, out, "--es", str(small_input)) == 2
    assert not out.exists() and _leftovers(tmp_path, "out") == []  # es/ written, main set failed: nothing
    monkeypatch.undo()
    assert _segment(trained, small_input, out, "--es", str(small_input)) == 0
    assert is_complete_set(out) and is_complete_set(out / "es")


SLOW_WRITER = r"""
import sys, time
sys.path.insert(0, {repo!r})
from SemiSupCardiacSegLib import reporting
real = reporting.write_volume
def slow(volume, path, **kw):
    out = real(volume, path, **kw)
    print("wrote", path.name, flush=True)
    time.sleep(2.0)  # a slow disk: Ctrl-C lands between two files of the set
    return out
reporting.write_volume = slow
from SemiSupCardiacSegLib.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _sigint_after_two_files(argv: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER.format(repo=str(REPO)), *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=sigint_as_at_a_terminal,
    )
    seen = 0
    for line in proc.stdout:
        if line.startswith("wrote"):
            seen += 1
            if seen == 2:
                proc.send_signal(signal.SIGINT)
                break
    _, err = proc.communicate(timeout=120)
    assert seen == 2, err
    return subprocess.CompletedProcess(argv, proc.returncode, "", err)


def test_sigint_while_segment_writes_leaves_nothing_then_the_earlier_set(trained, small_input, tmp_path):
    out = tmp_path / "out"
    argv = [
        "segment",
        str(small_input),
        "--out",
        str(out),
        "--model",
        str(trained / "model.pt"),
        "--mc-samples",
        "1",
        "--device",
        "cpu",
        "--quiet",
    ]
    done = _sigint_after_two_files(argv)
    assert done.returncode != 0
    assert not out.exists() and _leftovers(tmp_path, "out") == []  # before: 2 of 5 files, no report
    assert cli_main(argv) == 0  # the rerun works
    before = _snapshot(out)
    done = _sigint_after_two_files(argv + ["--overwrite", "--mc-samples", "2"])
    assert done.returncode != 0
    assert _snapshot(out) == before and _leftovers(tmp_path, "out") == []


# ----------------------------------------------------------------------------- a real full disk
@pytest.fixture()
def small_tmpfs(tmp_path):
    """A mount point factory for tmpfs of a given size (root only; skipped elsewhere)."""
    mounted = []

    def mount(size_bytes: int) -> Path:
        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("a small tmpfs needs root (mount -t tmpfs); the patched-writer tests cover full disks here")
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        kib = max(64, size_bytes // 1024)
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(point)], capture_output=True, text=True
        )
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def _set_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_segment_on_a_really_full_disk(trained, small_input, tmp_path, small_tmpfs, capsys):
    ref = tmp_path / "ref"
    assert _segment(trained, small_input, ref, "--no-tta") == 0
    size = _set_size(ref)
    # A disk with room for half a set: nothing at --out, no temporary folder left, one error line.
    disk = small_tmpfs(size // 2)
    assert _segment(trained, small_input, disk / "out", "--no-tta") == 2
    assert list(disk.iterdir()) == []
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    # Room for one set and a half: the first fits, the --overwrite one runs out; the first stays whole.
    disk = small_tmpfs(int(size * 1.5))
    assert _segment(trained, small_input, disk / "out", "--no-tta") == 0
    before = _snapshot(disk / "out")
    assert _segment(trained, small_input, disk / "out", "--no-tta", "--overwrite", "--mc-samples", "3") == 2
    assert _snapshot(disk / "out") == before and [p.name for p in disk.iterdir()] == ["out"]


def test_indices_out_on_a_full_disk_keeps_the_earlier_file(tmp_path, small_tmpfs):
    from SemiSupCardiacSegLib.cine_phantoms import make_cine_phantom

    ed, es = (make_cine_phantom(0, phase, shape=(64, 64, 6), spacing=(2.0, 2.0, 10.0)) for phase in ("ED", "ES"))
    ed_path = write_volume(Volume(ed.label.astype(np.uint8), ed.spacing), tmp_path / "ed.nrrd")
    es_path = write_volume(Volume(es.label.astype(np.uint8), es.spacing), tmp_path / "es.nrrd")
    disk = small_tmpfs(64 * 1024)
    target = disk / "indices.json"
    target.write_text('{"earlier": true}')
    try:  # fill the disk to the last block
        with open(disk / "fill", "wb") as f:
            while True:
                f.write(b"\0" * 1024)
                f.flush()
    except OSError:
        pass
    code = cli_main(["indices", "--ed", str(ed_path), "--es", str(es_path), "--out", str(target)])
    assert code == 2 and target.read_text() == '{"earlier": true}'
    assert sorted(p.name for p in disk.iterdir()) == ["fill", "indices.json"]
