"""The benchmark scripts still run (tiny --smoke sizes; they write nothing). Figures live in
benchmarks/results/, never in assertions."""

import subprocess
import sys

import pytest

from conftest import REPO, SHARED

#: Benchmarks that only make sense on the real data (kept outside the repository).
NEEDS_REAL_DATA = {"cine_indices.py": SHARED / "data" / "ACDC"}


@pytest.mark.parametrize("script", ["sdm_speed.py", "train_speed.py", "inference_speed.py", "loop_throughput.py", "uncertainty_quality.py",
                                    "method_comparison.py --task la", "method_comparison.py --task cine",
                                    "cine_indices.py --model {cine_model}", "uncertainty_by_method.py --task la"])
def test_benchmark_smoke(script):
    name, *extra = script.format(cine_model=REPO / "models" / "acdc_bmtctl.pt").split()
    if name in NEEDS_REAL_DATA and not NEEDS_REAL_DATA[name].is_dir():
        pytest.skip(f"{name} needs the real data at {NEEDS_REAL_DATA[name]} (kept outside the repository)")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *extra, "--smoke"], cwd=REPO / "benchmarks",
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()
