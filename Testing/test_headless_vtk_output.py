"""The demo's Slicer-scene step (headless Logic: import outputs, overlays, save) logs nothing from VTK.

VTK/MRML report errors and warnings on stderr (fd 2, below Python), so the step runs in a child
process and its whole output is checked. Causes fixed so far: the colors logic logged an error
when the application logic had no home directory, and a labelmap display node warned that the
'Labels' colour table was missing after the colors logic (which owns the default tables) was freed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import REPO

from SemiSupCardiacSegLib.io import write_volume
from SemiSupCardiacSegLib.volume import Volume

pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is needed for the headless Logic")
COLOR_FILES = REPO.parent / "shared" / "slicer" / "v5.10.0" / "Base" / "Logic" / "Resources" / "ColorFiles"


def _segment_outputs(folder):
    """What ``SemiSupCardiacSegLib segment`` writes, small: image, labels 1-3, SDM, uncertainty, report."""
    rng = np.random.default_rng(0)
    labels = np.zeros((28, 24, 12), np.uint8)
    labels[4:12, 4:12, 2:8], labels[14:22, 6:14, 3:9], labels[16:20, 8:12, 4:7] = 1, 2, 3
    spacing = (1.4, 1.4, 2.5)
    write_volume(Volume(rng.normal(size=labels.shape).astype(np.float32), spacing), folder / "input.nrrd")
    write_volume(Volume(labels, spacing), folder / "segmentation.nrrd")
    write_volume(Volume(np.where(labels > 0, -0.5, 0.5).astype(np.float32), spacing), folder / "distance.nrrd")
    write_volume(Volume(rng.uniform(0, 0.7, labels.shape).astype(np.float32), spacing), folder / "uncertainty.nrrd")
    structures = {"right ventricle": {"label": 1}, "myocardium": {"label": 2}, "left ventricle": {"label": 3}}
    (folder / "report.json").write_text(json.dumps({"structures": structures}))


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _vtk_lines(proc) -> list[str]:
    out = proc.stdout + proc.stderr
    return [
        line
        for line in out.splitlines()
        if any(w in line for w in ("vtk", "ERR|", "WARN|", "ERROR", "Warning", "Error"))
    ]


def test_demo_slicer_scene_step_logs_no_vtk_errors_or_warnings(tmp_path):
    _segment_outputs(tmp_path)
    proc = _run(f"""
        import gc, sys
        from pathlib import Path
        from SemiSupCardiacSegLib.demo import write_slicer_scene
        out = Path({str(tmp_path)!r})
        scene = write_slicer_scene(out, out / "input.nrrd")
        gc.collect()
        assert scene is not None and scene.is_file(), scene
        print("scene written")
        """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scene written" in proc.stdout
    assert _vtk_lines(proc) == [], "\n".join(_vtk_lines(proc))
    assert (tmp_path / "slicer_scene" / "input_segmentation.seg.nrrd").is_file()


def test_headless_core_with_slicers_color_files_resolves_the_heatmap_tables(tmp_path):
    if not COLOR_FILES.is_dir():
        pytest.skip(f"Slicer's ColorFiles not found at {COLOR_FILES} (../shared/slicer is not beside the repo)")
    _segment_outputs(tmp_path)
    proc = _run(f"""
        import gc, sys
        from pathlib import Path
        sys.path.insert(0, "SemiSupCardiacSeg")
        from SemiSupCardiacSegLib.io import read_volume
        from SemiSupCardiacSegSceneLogic import headless_slicer
        out = Path({str(tmp_path)!r})
        logic = headless_slicer({str(COLOR_FILES)!r}).logic()
        gc.collect()  # the Logic keeps the colors logic, hence the default tables, alive
        node = logic.add_volume_node(read_volume(out / "input.nrrd"), "input")
        result = logic.import_outputs(node, out)
        heat = result.uncertainty.GetDisplayNode().GetColorNode()
        sdm = result.distance.GetDisplayNode().GetColorNode()
        assert heat is not None and heat.GetName() == "Inferno", heat
        assert sdm is not None and sdm.GetName() == "DivergingBlueRed", sdm
        assert logic.scene.GetNodeByID("vtkMRMLColorTableNodeLabels") is not None
        print("tables resolved")
        """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tables resolved" in proc.stdout
    assert _vtk_lines(proc) == [], "\n".join(_vtk_lines(proc))
