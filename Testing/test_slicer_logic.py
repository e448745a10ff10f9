"""The module's Qt-free Logic against a real MRML scene (slicer-core from PyPI; no mocks of MRML)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import vtk
from conftest import REPO
from scipy.spatial.transform import Rotation

from SemiSupCardiacSegLib.checkpoint import load_model
from SemiSupCardiacSegLib.data.datasets import find_cases
from SemiSupCardiacSegLib.inference import InferenceSettings, Predictor
from SemiSupCardiacSegLib.io import read_label, read_volume
from SemiSupCardiacSegLib.phantoms import make_la_phantom
from SemiSupCardiacSegLib.volume import Volume

slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is needed for the Logic tests")
sys.path.insert(0, str(REPO / "SemiSupCardiacSeg"))
from SemiSupCardiacSegSceneLogic import SceneLogic, headless_slicer, volume_from_node  # noqa: E402


@pytest.fixture()
def logic():
    """The module's Logic on a headless Slicer core (scene + application, volumes, colors and
    segmentations logics), as the README demo uses it."""
    return headless_slicer().logic()


def _oblique_phantom(seed: int = 5) -> Volume:
    ph = make_la_phantom(shape=(84, 76, 36), spacing=(1.2, 1.2, 1.6), seed=seed)
    direction = Rotation.from_euler("xz", [10, 25], degrees=True).as_matrix()
    return Volume(ph.image, ph.spacing, (-30.0, 12.0, 7.5), direction)


def test_volume_node_round_trip_keeps_voxels_and_geometry(logic):
    vol = _oblique_phantom()
    node = logic.add_volume_node(vol, "in")
    back = volume_from_node(node)
    assert back.same_grid(vol) and np.array_equal(back.array, vol.array)
    mat = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(mat)
    got = np.array([[mat.GetElement(r, c) for c in range(4)] for r in range(4)])
    assert np.allclose(got, vol.ijk_to_ras())
    # RAS of voxel (0,0,0) is the LPS origin with x and y negated.
    assert np.allclose(got[:3, 3], [30.0, -12.0, 7.5])


def test_segment_matches_library_on_input_grid(logic, trained):
    vol = _oblique_phantom()
    node = logic.add_volume_node(vol, "patient")
    n_before = logic.scene.GetNumberOfNodes()
    result = logic.segment(node, model=str(trained / "model.pt"), mc_samples=2, device="cpu")
    assert logic.scene.GetNumberOfNodes() > n_before
    # Library output for the same input and model.
    net, meta = load_model(trained / "model.pt")
    assert meta.inference.tta_flip_axes == (0, 1)  # the Logic must apply the model's TTA too
    pred = Predictor(net, meta, InferenceSettings.from_meta(meta, mc_samples=2, device="cpu")).predict(vol)
    labels = logic.labels_from_segmentation(result.segmentation, node)
    assert labels.same_grid(vol)
    assert np.array_equal(labels.array, pred.labels.array)
    seg = result.segmentation.GetSegmentation()
    assert seg.GetNumberOfSegments() == 1 and seg.GetNthSegment(0).GetName() == "left atrium"
    for out in (result.distance, result.uncertainty):
        v = volume_from_node(out)
        assert v.same_grid(vol) and v.array.dtype == np.float32 and np.isfinite(v.array).all()
    assert np.allclose(volume_from_node(result.uncertainty).array, pred.entropy.array, atol=1e-6)
    # Colour tables: Inferno for the heatmap, DivergingBlueRed for the SDM with its window centred on 0.
    assert result.uncertainty.GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeFileInferno.txt"
    sdm_display = result.distance.GetDisplayNode()
    assert sdm_display.GetColorNodeID() == "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
    assert sdm_display.GetLevel() == 0.0 and sdm_display.GetWindow() == 2.0 and not sdm_display.GetAutoWindowLevel()
    assert np.allclose(volume_from_node(result.distance).array, pred.foreground_sdm().array, atol=1e-6)
    assert result.report["structures"]["left atrium"]["volume_ml"] == pytest.approx(
        labels.array.sum() * vol.voxel_volume_ml()
    )
    table = logic.results_table(result)
    assert table.GetNumberOfRows() == 1 and table.GetCellText(0, 0) == "left atrium"
    assert float(table.GetCellText(0, 1)) == pytest.approx(
        result.report["structures"]["left atrium"]["volume_ml"], abs=0.01
    )
    # The input node is untouched; a second run makes new nodes with new names.
    assert np.array_equal(volume_from_node(node).array, vol.array)
    again = logic.segment(node, model=str(trained / "model.pt"), mc_samples=1, device="cpu")
    assert again.segmentation.GetName() != result.segmentation.GetName()


def test_segment_with_roi_is_empty_outside_it_and_on_the_full_grid(logic, trained):
    vol = _oblique_phantom(seed=6)
    node = logic.add_volume_node(vol, "patient")
    centre = vol.ijk_to_ras() @ np.array([*(np.array(vol.shape) / 2), 1.0])
    roi = logic.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    roi.SetCenter(*centre[:3])
    roi.SetSize(40.0, 40.0, 30.0)
    result = logic.segment(node, model=str(trained / "model.pt"), mc_samples=2, device="cpu", roi_node=roi)
    labels = logic.labels_from_segmentation(result.segmentation, node)
    assert labels.same_grid(vol)
    # Voxel centres outside the ROI's RAS box: no label, no uncertainty, SDM "outside".
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in vol.shape], indexing="ij"), -1).reshape(-1, 3)
    ras = (vol.ijk_to_ras() @ np.c_[ijk, np.ones(len(ijk))].T)[:3].T
    inside = np.all(np.abs(ras - centre[:3]) <= np.array([20.0, 20.0, 15.0]) + 1e-6, axis=1).reshape(vol.shape)
    assert inside.any() and (~inside).any()
    assert not labels.array[~inside].any()
    assert np.all(volume_from_node(result.uncertainty).array[~inside] == 0)
    assert np.all(volume_from_node(result.distance).array[~inside] == 1.0)
    assert volume_from_node(result.uncertainty).array[inside].max() > 0
    far = logic.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "far")
    far.SetCenter(1e4, 1e4, 1e4)
    far.SetSize(1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="does not overlap"):
        logic.segment(node, model=str(trained / "model.pt"), mc_samples=1, device="cpu", roi_node=far)


def test_add_to_library_round_trip_and_never_overwrites(logic, tmp_path):
    vol = _oblique_phantom(seed=8)
    ph_label = (vol.array > np.percentile(vol.array, 97)).astype(np.uint8)
    node = logic.add_volume_node(vol, "case A")
    seg = logic.add_segmentation_node(vol.with_array(ph_label), node, {1: "left atrium"}, "case A seg")
    img1, lab1 = logic.add_to_library(node, tmp_path / "lib", seg)
    assert img1.name == "case_A.nrrd" and lab1.name == "case_A_label.nrrd"
    img_back, lab_back = read_volume(img1), read_label(lab1)
    assert img_back.same_grid(vol) and np.array_equal(img_back.array, vol.array)
    assert lab_back.same_grid(vol) and np.array_equal(lab_back.array, ph_label)
    first_bytes = img1.read_bytes()
    img2, lab2 = logic.add_to_library(node, tmp_path / "lib", seg)
    assert img2.name == "case_A_2.nrrd" and lab2.name == "case_A_2_label.nrrd"
    assert img1.read_bytes() == first_bytes
    img3, lab3 = logic.add_to_library(node, tmp_path / "lib")  # unlabeled case
    assert img3.name == "case_A_3.nrrd" and lab3 is None and not (tmp_path / "lib" / "case_A_3_label.nrrd").exists()
    # The library is what Training/train.py --data reads: two labeled cases and one unlabeled.
    cases = {c.name: c.label for c in find_cases(tmp_path / "lib")}
    assert set(cases) == {"case_A", "case_A_2", "case_A_3"}
    assert cases["case_A"] == lab1 and cases["case_A_3"] is None
    # The manifest lists the three cases in the order they were added, labeled or not.
    import json

    manifest = json.loads((tmp_path / "lib" / "manifest.json").read_text())["cases"]
    assert [(c["name"], c["labeled"]) for c in manifest] == [("case_A", True), ("case_A_2", True), ("case_A_3", False)]
    assert manifest[0]["source_node"] == "case A" and manifest[0]["shape"] == list(vol.shape)


def test_fine_tune_from_the_module_logic_gives_a_loadable_model(logic, trained, phantom_folder, tmp_path):
    """A short real fine-tune, started by the Logic in a child process, on a library it exported."""
    lib = tmp_path / "lib"
    for i, seed in enumerate((1, 2, 3, 4)):  # 3 labeled (the last held out for validation), 1 unlabeled
        ph = make_la_phantom(shape=(64, 64, 32), spacing=(1.5, 1.5, 1.5), seed=seed)
        node = logic.add_volume_node(Volume(ph.image, ph.spacing), f"case{i}")
        seg = (
            logic.add_segmentation_node(Volume(ph.label, ph.spacing), node, {1: "left atrium"}, f"seg{i}")
            if i < 3
            else None
        )
        logic.add_to_library(node, lib, seg)
    job = logic.fine_tune(lib, tmp_path / "ft", model=str(trained / "model.pt"), iterations=2, threads=1)
    assert job.wait(600) == 0, (tmp_path / "ft" / "fine_tune_stdout.txt").read_text()[-2000:]
    new_model = str(tmp_path / "ft" / "model.pt")
    meta = logic.load_model(new_model)[1]
    assert meta.iteration == 2
    assert meta.training_data["validation_cases"] == ["case2"] and "case2" not in meta.training_data["labeled_cases"]
    assert logic.segment_button_text(new_model) == "Segment LA"
    # Validation metrics of the old and the new model side by side, on the held-out case.
    table, results = logic.compare_models(str(trained / "model.pt"), new_model, device="cpu")
    assert results["old"]["per_case"].keys() == results["new"]["per_case"].keys() == {"case2"}
    rows = {
        (table.GetCellText(r, 0), table.GetCellText(r, 1)): (table.GetCellText(r, 2), table.GetCellText(r, 3))
        for r in range(table.GetNumberOfRows())
    }
    before, after = rows[("left atrium", "dice")]
    assert float(before) == pytest.approx(results["old"]["mean"]["left atrium"]["dice"]["mean"], abs=5e-4)
    assert float(after) == pytest.approx(results["new"]["mean"]["left atrium"]["dice"]["mean"], abs=5e-4)
    # The model list: shipped names, then registered checkpoints that exist.
    choices = logic.model_choices([new_model, str(tmp_path / "gone.pt"), new_model])
    assert choices[-1] == new_model and choices.count(new_model) == 1 and str(tmp_path / "gone.pt") not in choices
    assert "la" in choices


def test_bad_input_names_the_problem(logic):
    empty = logic.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(ValueError, match="'empty' has no image data"):
        logic.segment(empty)
    with pytest.raises(ValueError, match="no input volume"):
        logic.segment(None)


def test_uncertain_regions_have_ras_centres_inside_and_slices_jump_there(logic):
    e = np.zeros((30, 30, 20), np.float32)
    e[3:8, 3:8, 3:8] = 0.5
    e[15:25, 15:25, 10:15] = 0.65
    vol = Volume(
        e,
        spacing=(1.0, 1.5, 2.0),
        origin=(5.0, 7.0, -9.0),
        direction=Rotation.from_euler("z", 20, degrees=True).as_matrix(),
    )
    node = logic.add_volume_node(vol, "uncertainty")
    regions = logic.uncertain_regions(node)
    assert [r.mean_entropy for r in regions] == pytest.approx([0.65, 0.5])
    ras_to_ijk = np.linalg.inv(vol.ijk_to_ras())
    for r in regions:
        ijk = np.rint(ras_to_ijk @ np.append(r.centre_ras, 1.0))[:3].astype(int)
        assert e[tuple(ijk)] > 0.34
    slice_node = logic.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    slice_node.SetOrientationToAxial()
    assert logic.jump_slices_to(regions[0].centre_ras) == 1
    m = slice_node.GetSliceToRAS()
    assert np.allclose([m.GetElement(r, 3) for r in range(3)], regions[0].centre_ras, atol=1e-4)


def test_scene_with_overlays_saves_and_reloads(logic, trained, tmp_path):
    vol = _oblique_phantom(seed=2)
    node = logic.add_volume_node(vol, "patient")
    result = logic.segment(node, model=str(trained / "model.pt"), mc_samples=1, device="cpu")
    assert logic.show_overlays(node, result, opacity=0.7) == 3
    composites = [logic.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode") for i in range(3)]
    assert [c.GetForegroundOpacity() for c in composites] == pytest.approx([0.7] * 3)
    assert logic.set_heatmap_opacity(0.25) == 3
    assert [c.GetForegroundOpacity() for c in composites] == pytest.approx([0.25] * 3)
    with pytest.raises(ValueError, match="opacity"):
        logic.set_heatmap_opacity(1.5)
    nodes = [node, result.segmentation, result.distance, result.uncertainty]
    scene_file = logic.save_scene(tmp_path / "scene", nodes)
    with pytest.raises(FileExistsError):
        logic.save_scene(tmp_path / "scene", nodes)
    reloaded = slicer.vtkMRMLScene()
    reloaded.SetURL(str(scene_file))
    assert reloaded.Import()
    names = {
        reloaded.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetName()
        for i in range(reloaded.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
    }
    assert names == {"patient", "patient distance", "patient uncertainty"}
    back = volume_from_node(reloaded.GetFirstNodeByName("patient uncertainty"))
    assert back.same_grid(vol) and np.allclose(back.array, volume_from_node(result.uncertainty).array)
    red = [reloaded.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode") for i in range(3)]
    fg = {reloaded.GetNodeByID(v.GetForegroundVolumeID()).GetName() for v in red}
    assert fg == {"patient uncertainty"}
    assert {v.GetForegroundOpacity() for v in red} == {0.25}
    heat = reloaded.GetFirstNodeByName("patient uncertainty").GetDisplayNode()
    assert heat.GetColorNodeID() == "vtkMRMLColorTableNodeFileInferno.txt"  # resolves when Slicer opens the scene
    seg = reloaded.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    reloaded_logic = SceneLogic(reloaded)
    labels = reloaded_logic.labels_from_segmentation(seg, reloaded.GetFirstNodeByName("patient"))
    assert np.array_equal(labels.array, logic.labels_from_segmentation(result.segmentation, node).array)


def test_import_outputs_of_the_command_line_matches_in_process_segment(logic, trained, tmp_path):
    from SemiSupCardiacSegLib.cli import main as cli_main
    from SemiSupCardiacSegLib.io import write_volume

    vol = _oblique_phantom(seed=4)
    inp = write_volume(vol, tmp_path / "in.nrrd")
    assert (
        cli_main(
            [
                "segment",
                str(inp),
                "--out",
                str(tmp_path / "out"),
                "--model",
                str(trained / "model.pt"),
                "--mc-samples",
                "2",
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    node = logic.add_volume_node(vol, "case")
    imported = logic.import_outputs(node, tmp_path / "out")
    direct = logic.segment(node, model=str(trained / "model.pt"), mc_samples=2, device="cpu")
    assert np.array_equal(
        logic.labels_from_segmentation(imported.segmentation, node).array,
        logic.labels_from_segmentation(direct.segmentation, node).array,
    )
    assert np.allclose(
        volume_from_node(imported.uncertainty).array, volume_from_node(direct.uncertainty).array, atol=1e-6
    )
    assert imported.segmentation.GetSegmentation().GetNthSegment(0).GetName() == "left atrium"
    other = logic.add_volume_node(
        Volume(vol.array[:, :, :-1].copy(), vol.spacing, vol.origin, vol.direction), "cropped"
    )
    with pytest.raises(ValueError, match="not on the grid"):
        logic.import_outputs(other, tmp_path / "out")


def test_cardiac_table_from_ed_es_segmentations(logic):
    from SemiSupCardiacSegSceneLogic.logic import SegmentResult

    from SemiSupCardiacSegLib.cardiac import cardiac_indices
    from SemiSupCardiacSegLib.cine_phantoms import make_cine_phantom

    names = {1: "right ventricle", 2: "myocardium", 3: "left ventricle"}
    results, nodes = [], []
    for phase in ("ED", "ES"):
        ph = make_cine_phantom(3, phase)
        node = logic.add_volume_node(Volume(ph.image, ph.spacing), phase)
        seg = logic.add_segmentation_node(Volume(ph.label, ph.spacing), node, names, f"{phase} seg")
        results.append(SegmentResult(segmentation=seg, distance=None, uncertainty=None))
        nodes.append((node, ph))
    table, values = logic.cardiac_table(results[0], results[1], nodes[0][0])
    expected = cardiac_indices(nodes[0][1].label, nodes[1][1].label, nodes[0][1].spacing)
    assert values["lv_ef_percent"] == pytest.approx(expected["lv_ef_percent"])
    rows = {table.GetCellText(r, 0): float(table.GetCellText(r, 1)) for r in range(table.GetNumberOfRows())}
    assert rows["lv_ef"] == pytest.approx(expected["lv_ef_percent"], abs=0.05) and rows["myo_mass"] > 0
    # Each segment carries its standard (SNOMED CT) terminology entry.
    seg = results[0].segmentation.GetSegmentation()
    tags = {seg.GetNthSegment(i).GetName(): seg.GetNthSegment(i).GetTerminology() for i in range(3)}
    assert tags["right ventricle"].split("~")[2] == "SCT^53085002^Right ventricle"
    # Myocardium: tissue 'Muscle' in the anatomic region 'Heart' (Slicer's lists have no myocardium type).
    assert tags["myocardium"].split("~")[1:3] == ["SCT^85756007^Tissue", "SCT^71616004^Muscle"]
    assert tags["myocardium"].split("~")[5] == "SCT^80891009^Heart"
    assert tags["left ventricle"].split("~")[2] == "SCT^87878005^Left ventricle"
    assert all(
        tags[n].split("~")[1] == "SCT^123037004^Anatomical Structure" for n in ("right ventricle", "left ventricle")
    )
    assert all(len(t.split("~")) == 7 for t in tags.values())


def test_logic_imports_without_torch():
    """The module must load (and offer to install torch) before torch exists: importing the Logic
    may not import torch."""
    import subprocess

    code = (
        "import sys; sys.path[:0] = [%r, %r]; import SemiSupCardiacSegSceneLogic; "
        "assert 'torch' not in sys.modules, 'torch imported'" % (str(REPO), str(REPO / "SemiSupCardiacSeg"))
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_background_segment_job_streams_progress_and_imports(logic, trained, tmp_path):
    vol = _oblique_phantom(seed=9)
    node = logic.add_volume_node(vol, "bg")
    job = logic.start_segment_job(node, tmp_path / "job", model=str(trained / "model.pt"), mc_samples=2, device="cpu")
    assert job.wait(600) == 0, (tmp_path / "job" / "result" / "segment_stdout.txt").read_text()[-2000:]
    assert job.progress() == pytest.approx(1.0)
    result = logic.import_outputs(node, tmp_path / "job" / "result")
    direct = logic.segment(node, model=str(trained / "model.pt"), mc_samples=2, device="cpu")
    a = logic.labels_from_segmentation(result.segmentation, node).array
    b = logic.labels_from_segmentation(direct.segmentation, node).array
    assert np.array_equal(a, b)  # same seeded MC masks: the child process gives the in-process result
    # Compact outputs: the maps travel as uint8 codes and decode to the in-process values within half a step.
    report = json.loads((tmp_path / "job" / "result" / "report.json").read_text())
    assert read_volume(tmp_path / "job" / "result" / "uncertainty.nrrd").array.dtype == np.uint8
    for name, node_of in (("uncertainty.nrrd", lambda r: r.uncertainty), ("distance.nrrd", lambda r: r.distance)):
        step = report["stored"][name]["scale"]
        diff = np.abs(volume_from_node(node_of(result)).array - volume_from_node(node_of(direct)).array)
        assert diff.max() <= step / 2 + 1e-6, name
    # Cancel: a job killed at once ends and leaves no outputs behind.
    slow = logic.start_segment_job(
        node, tmp_path / "job2", model=str(trained / "model.pt"), mc_samples=50, device="cpu"
    )
    slow.cancel()
    assert slow.poll() is not None and not (tmp_path / "job2" / "result" / "segmentation.nrrd").exists()
    # A bad model path: the child's one-line error is available to show.
    bad = logic.start_segment_job(
        node, tmp_path / "job3", model=str(tmp_path / "missing.pt"), mc_samples=1, device="cpu"
    )
    assert bad.wait(120) == 2 and bad.error().startswith("error:")


def test_shipped_cine_model_through_the_logic(logic):
    """The shipped cine model on a cine phantom stack: three named segments on the input grid, the
    button names the structures."""
    from SemiSupCardiacSegLib.cine_phantoms import make_cine_phantom

    ph = make_cine_phantom(2, "ED")
    node = logic.add_volume_node(Volume(ph.image, ph.spacing), "cine")
    result = logic.segment(node, model="cine", mc_samples=2, device="cpu")
    seg = result.segmentation.GetSegmentation()
    assert sorted(seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())) == [
        "left ventricle",
        "myocardium",
        "right ventricle",
    ]
    labels = logic.labels_from_segmentation(result.segmentation, node)
    assert labels.shape == ph.label.shape and set(np.unique(labels.array)) <= {0, 1, 2, 3}
    assert logic.segment_button_text("cine") == "Segment RV, myocardium, LV"


def _library_case(logic, name="case L"):
    vol = _oblique_phantom(seed=9)
    node = logic.add_volume_node(vol, name)
    seg = logic.add_segmentation_node(
        vol.with_array((vol.array > np.percentile(vol.array, 97)).astype(np.uint8)),
        node,
        {1: "left atrium"},
        f"{name} seg",
    )
    return node, seg


@pytest.mark.parametrize("manifest_text", ["{not json", '{"cases": {"a": 1}}', "[1, 2]", '{"cases": [3]}'])
def test_add_to_library_refuses_a_corrupt_manifest_before_writing(logic, tmp_path, manifest_text):
    """Before: the image and label were written, then the manifest raised; each retry left one more
    orphan copy (case_L, case_L_2, ...). Now nothing is written and the error names the file."""
    node, seg = _library_case(logic)
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "manifest.json").write_text(manifest_text)
    for _ in range(2):  # a retry changes nothing either
        with pytest.raises(ValueError, match="manifest.json"):
            logic.add_to_library(node, lib, seg)
        assert sorted(p.name for p in lib.iterdir()) == ["manifest.json"]
    assert (lib / "manifest.json").read_text() == manifest_text


def test_add_to_library_is_one_unit_when_the_manifest_update_fails(logic, tmp_path, monkeypatch):
    """A manifest write that fails (disk full) after the files were written removes them again."""
    import errno

    from SemiSupCardiacSegLib import training_library

    node, seg = _library_case(logic)
    lib = tmp_path / "lib"
    logic.add_to_library(node, lib, seg)
    before = {p.name: p.read_bytes() for p in lib.iterdir()}
    real = training_library.atomic_write_text  # the manifest's writer

    def full(path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(training_library, "atomic_write_text", full)
    for _ in range(2):
        with pytest.raises(OSError, match="No space"):
            logic.add_to_library(node, lib, seg)
        assert {p.name: p.read_bytes() for p in lib.iterdir()} == before  # no orphan case_L_2 files
    monkeypatch.setattr(training_library, "atomic_write_text", real)
    img, lab = logic.add_to_library(node, lib, seg)
    assert img.name == "case_L_2.nrrd" and lab.name == "case_L_2_label.nrrd"
    names = [c["name"] for c in json.loads((lib / "manifest.json").read_text())["cases"]]
    assert names == ["case_L", "case_L_2"]
    assert {c.name for c in find_cases(lib)} == {"case_L", "case_L_2"}


def test_add_to_library_still_refuses_a_segmentation_of_another_volume(logic, tmp_path):
    node, seg = _library_case(logic, "case M")
    other = logic.add_volume_node(_oblique_phantom(seed=10), "other")
    with pytest.raises(ValueError, match="made from volume 'case M'"):
        logic.add_to_library(other, tmp_path / "lib", seg)
    assert not (tmp_path / "lib").exists()
