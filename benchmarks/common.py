"""Shared benchmark plumbing: hardware/commit description and writing JSON + a Markdown table."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

_STARTED = time.perf_counter()

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def benchmark_parser(doc: str | None, smoke_help: str = "tiny run for the test suite; writes nothing"):
    """argparse parser with the options every benchmark has: --profile, --threads, --smoke."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="cpu-small", help="results/<profile>/ to write into")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--smoke", action="store_true", help=smoke_help)
    return p


def speed_probe(repeats: int = 5) -> float:
    """Seconds of a fixed CPU workload (one 3x3x3 convolution, 16 -> 16 channels, on 2 x 64 x 64 x 32
    voxels, at the current torch thread count; best of ``repeats`` after a warm-up). This shared VM's
    speed drifts between runs (the same code measured 1.3-1.6x slower on another day), so every
    result records it: compare absolute seconds across runs only through it, ratios within a run directly."""
    import torch

    conv = torch.nn.Conv3d(16, 16, 3, padding=1)
    x = torch.randn(2, 16, 64, 64, 32, generator=torch.Generator().manual_seed(0))
    best = float("inf")
    with torch.inference_mode():
        conv(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - t0)
    return best


def environment() -> dict:
    """Commit, CPU/GPU, thread count, library versions and ``speed_probe`` seconds, recorded with every result."""
    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "commit": commit or None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_probe_s": round(speed_probe(), 4),
    }


def write_result(profile: str, name: str, result: dict, table: str, folder: Path | None = None) -> Path:
    """Write benchmarks/results/<profile>/<name>.json and <name>.md (the readable table); into
    ``folder`` instead where given."""
    from SemiSupCardiacSegLib.atomic import atomic_write_text

    out = folder or ROOT / "benchmarks" / "results" / profile
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.json", json.dumps(result, indent=2))
    atomic_write_text(out / f"{name}.md", table)
    return out / f"{name}.json"


@contextlib.contextmanager
def locked(path: Path):
    """Hold an exclusive lock on ``path``.lock for the block: other benchmark processes that read,
    merge and rewrite the same result file wait (``fcntl.flock``; released if the process dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def publish(profile: str, name: str, rows: dict, header: list[str], cells, extra_lines: list[str] = ()) -> Path:
    """Write rows (name -> measurement dict) as JSON + a Markdown table and print the table.

    header: column titles; cells(row_name, row) -> the row's cells as strings, in header order, or
    None to keep the row out of the table (JSON only). extra_lines: Markdown after the table.
    The wall time since the benchmark started (this module's import) is recorded.
    """
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] if header else []
    table += ["| " + " | ".join(c) + " |" for c in (cells(k, v) for k, v in rows.items()) if c is not None]
    text = "\n".join(table + list(extra_lines)) + "\n"
    result = {
        "benchmark": name,
        "command": "python " + " ".join(sys.argv),
        "environment": environment(),
        "wall_s": round(time.perf_counter() - _STARTED, 1),
        "results": rows,
    }
    path = write_result(profile, name, result, text)
    print(path)
    print(text)
    return path
