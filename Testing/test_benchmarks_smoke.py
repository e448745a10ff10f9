"""The benchmark scripts still run (tiny --smoke sizes; they write nothing). Figures live in
benchmarks/results/, never in assertions."""

import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.parametrize("script", ["sdm_speed.py", "train_speed.py", "inference_memory.py", "uncertainty_quality.py",
                                    "method_comparison.py --task la", "method_comparison.py --task cine"])
def test_benchmark_smoke(script):
    name, *extra = script.split()
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *extra, "--smoke"], cwd=REPO / "benchmarks",
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()
