"""The README's main job on a fresh clone: the phantom demo with the shipped model."""

import json
import subprocess
import sys

import pytest
from conftest import REPO

from SemiSupCardiacSegLib.shipped import SHIPPED


def test_phantom_demo_writes_every_output_and_a_slicer_scene(tmp_path):
    if not SHIPPED["la"].path.is_file():
        pytest.skip("shipped LA model not present in models/")
    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "SemiSupCardiacSegLib.demo",
            "--source",
            "phantom",
            "--out",
            str(out),
            "--mc-samples",
            "2",
            "--device",
            "cpu",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in (
        "input.nrrd",
        "reference_label.nrrd",
        "segmentation.nrrd",
        "probability.nrrd",
        "distance.nrrd",
        "uncertainty.nrrd",
        "report.json",
        "montage.png",
        "slicer_scene/scene.mrml",
        "slicer_scene/input_segmentation.seg.nrrd",
    ):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["demo"]["input"].startswith("synthetic")
    # The shipped model was trained on real LGE-MRI only; the phantom is made to look like it.
    assert report["demo"]["dice_vs_reference"] > 0.5
