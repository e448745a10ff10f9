"""The segments' standard terminology against Slicer's own terminology lists (5.6.2 and 5.10.0).

Slicer's terminology selector shows and edits a segment's terminology only when its category, type
(and modifier) are entries of the loaded list that the entry's context names, and its anatomic region
an entry of the region list. The lists are read from ../shared/slicer/<tag>/Modules/Loadable/
Terminologies/Resources (Slicer's files, unmodified; the tests skip where they are absent).
"""

from __future__ import annotations

import gc
import json
import sys

import numpy as np
import pytest
from conftest import REPO

from SemiSupCardiacSegLib.volume import Volume

sys.path.insert(0, str(REPO / "SemiSupCardiacSeg"))
from SemiSupCardiacSegSceneLogic import logic as logic_module  # noqa: E402
from SemiSupCardiacSegSceneLogic import terminology  # noqa: E402

SLICER_FILES = REPO.parent / "shared" / "slicer"
TAGS = ("v5.6.2", "v5.10.0")
STRUCTURES = sorted(terminology.STRUCTURES)


def _resources(tag: str):
    folder = SLICER_FILES / tag / "Modules" / "Loadable" / "Terminologies" / "Resources"
    if not folder.is_dir():
        pytest.skip(f"Slicer {tag} terminology lists not found at {folder} (../shared/slicer is not beside the repo)")
    return folder


def _lists(tag: str) -> tuple[dict[str, dict], dict[str, dict], list]:
    """(category/type lists by context name, region lists by context name, file paths) of ``tag``."""
    folder = _resources(tag)
    types, regions, files = {}, {}, sorted(folder.glob("*.json"))
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        if "SegmentationCategoryTypeContextName" in data:
            types[data["SegmentationCategoryTypeContextName"]] = data
        elif "AnatomicContextName" in data:
            regions[data["AnatomicContextName"]] = data
    assert types and regions, f"no terminology lists in {folder}"
    return types, regions, files


def _find(items: list, code: dict) -> dict | None:
    """The item of ``items`` with the code's scheme, value and (exact) meaning."""
    for item in items:
        if (item.get("CodingSchemeDesignator"), item.get("CodeValue"), item.get("CodeMeaning")) == (
            code["scheme"],
            code["value"],
            code["meaning"],
        ):
            return item
    return None


# ------------------------------------------------------------------------------- the data itself
def test_entries_are_slicers_seven_field_format():
    assert set(STRUCTURES) == {"left atrium", "right ventricle", "myocardium", "left ventricle"}
    for name in STRUCTURES:
        fields = terminology.terminology_entry(name).split("~")
        assert len(fields) == 7, fields
        for i in (1, 2, 3, 5, 6):
            assert len(fields[i].split("^")) == 3, fields[i]
        entry = terminology.STRUCTURES[name]
        assert fields[0] == entry["context"] and fields[4] == entry["anatomic_context"]
        assert fields[2] == "^".join(entry["type"][k] for k in ("scheme", "value", "meaning"))
    assert terminology.terminology_entry("spleen of a unicorn") is None
    # The old myocardium code (SCT 74281007) is in none of Slicer's lists; it may not come back.
    assert "74281007" not in json.dumps(terminology.STRUCTURES)


def test_colours_are_rgb_fractions_and_logic_reexports_the_names():
    for name in STRUCTURES:
        color = terminology.structure_color(name)
        assert len(color) == 3 and all(0.0 <= c <= 1.0 for c in color)
        entry = terminology.STRUCTURES[name]
        assert color == tuple(c / 255 for c in entry.get("display_color", entry["color"]))
    cine = [terminology.structure_color(n) for n in ("right ventricle", "myocardium", "left ventricle")]
    assert min(np.abs(np.subtract(a, b)).max() for i, a in enumerate(cine) for b in cine[i + 1 :]) > 0.3
    assert terminology.structure_color("unknown") == terminology.DEFAULT_COLOR
    assert logic_module.STRUCTURE_COLORS is terminology.STRUCTURE_COLORS
    assert logic_module.DEFAULT_COLOR == terminology.DEFAULT_COLOR
    assert logic_module.STRUCTURE_CODES == terminology.STRUCTURE_CODES
    assert logic_module.terminology_entry is terminology.terminology_entry


def test_data_file_is_installed_with_the_module():
    text = (REPO / "SemiSupCardiacSeg" / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "SemiSupCardiacSeg")
    assert "SemiSupCardiacSegSceneLogic/terminology.py" in text
    resources = text.split("set(MODULE_PYTHON_RESOURCES", 1)[1].split(")", 1)[0]
    assert "SemiSupCardiacSegSceneLogic/terminology.json" in resources


# ---------------------------------------------------------------------------- Slicer's JSON lists
@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("name", STRUCTURES)
def test_codes_are_entries_of_slicers_lists(tag, name):
    types, regions, _ = _lists(tag)
    entry = terminology.STRUCTURES[name]
    assert entry["context"] in types, f"{tag}: no list named {entry['context']!r} (has {sorted(types)})"
    categories = types[entry["context"]]["SegmentationCodes"]["Category"]
    category = _find(categories, entry["category"])
    assert category is not None, f"{tag}: category {entry['category']} not in {entry['context']!r}"
    type_ = _find(category.get("Type", []), entry["type"])
    assert type_ is not None, f"{tag}: type {entry['type']} not in category {entry['category']['meaning']}"
    if entry.get("modifier"):
        assert _find(type_.get("Modifier", []), entry["modifier"]) is not None, f"{tag}: modifier {entry['modifier']}"
    assert entry["color"] == type_["recommendedDisplayRGBValue"]
    assert entry["anatomic_context"] in regions, f"{tag}: no region list named {entry['anatomic_context']!r}"
    if entry.get("anatomic_region"):
        # The selector offers a region only for categories with showAnatomy.
        assert category.get("showAnatomy") is True
        region_list = regions[entry["anatomic_context"]]["AnatomicCodes"]["AnatomicRegion"]
        region = _find(region_list, entry["anatomic_region"])
        assert region is not None, f"{tag}: region {entry['anatomic_region']} not in {entry['anatomic_context']!r}"
        if entry.get("region_modifier"):
            assert _find(region.get("Modifier", []), entry["region_modifier"]) is not None


# ------------------------------------------------------- Slicer's terminology logic (slicer-core)
def _terminology_logic(tag: str):
    slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is needed")
    if not hasattr(slicer, "vtkSlicerTerminologiesModuleLogic"):
        pytest.skip("this slicer-core has no vtkSlicerTerminologiesModuleLogic")
    types, regions, files = _lists(tag)
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    load_regions = getattr(logic, "LoadRegionContextFromFile", None) or logic.LoadAnatomicContextFromFile
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        loaded = (
            logic.LoadTerminologyFromFile(str(path))
            if "SegmentationCategoryTypeContextName" in data
            else load_regions(str(path))
        )
        assert loaded, f"Slicer's logic could not load {path}"
    return slicer, logic


@pytest.mark.parametrize("tag", TAGS)
def test_slicer_logic_finds_every_entry_in_the_loaded_lists(tag):
    slicer, logic = _terminology_logic(tag)
    for name in STRUCTURES:
        serialized = terminology.terminology_entry(name)
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(serialized, entry), name
        assert logic.SerializeTerminologyEntry(entry) == serialized
        # Look the codes up in the loaded lists: found entries come back with the list's details
        # (3D Slicer label, UMLS concept); a code that is in no list keeps only what the tag said.
        assert logic.UpdateEntryFromLoadedTerminologies(entry, [], [])
        data = terminology.STRUCTURES[name]
        assert entry.GetTerminologyContextName() == data["context"]
        assert entry.GetTypeObject().GetSlicerLabel(), f"{tag}: {name}'s type was not found in a loaded list"
        assert tuple(entry.GetTypeObject().GetRecommendedDisplayRGBValue()) == tuple(data["color"])
        if data.get("anatomic_region"):
            assert entry.GetRegionObject().GetCodeValue() == data["anatomic_region"]["value"]
            assert entry.GetRegionObject().GetUMLSConceptUID(), f"{tag}: {name}'s region was not found"


@pytest.mark.parametrize("tag", TAGS)
def test_slicer_logic_lookup_rejects_a_code_missing_from_the_lists(tag):
    """The check above can fail: the old myocardium code is not found."""
    slicer, logic = _terminology_logic(tag)
    entry = slicer.vtkSlicerTerminologyEntry()
    old = (
        "Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure"
        "~SCT^74281007^Myocardium~^^~Anatomic codes - DICOM master list~^^~^^"
    )
    if logic.DeserializeTerminologyEntry(old, entry):  # 5.6-style logics refuse it here already
        logic.UpdateEntryFromLoadedTerminologies(entry, [], [])
        assert not entry.GetTypeObject().GetSlicerLabel()


# ----------------------------------------------------------------- the Logic's segments, saved
def test_segment_tags_round_trip_through_a_saved_segmentation(tmp_path):
    slicer = pytest.importorskip("slicer", reason="slicer-core (pip install slicer-core) is needed")
    import vtk  # noqa: PLC0415
    from SemiSupCardiacSegSceneLogic import headless_slicer  # noqa: PLC0415

    logic = headless_slicer().logic()
    gc.collect()
    labels = np.zeros((24, 20, 12), np.uint8)
    labels[2:8, 2:8, 2:6], labels[10:16, 4:10, 3:8], labels[12:14, 6:8, 4:6], labels[18:22, 12:18, 6:10] = 1, 2, 3, 4
    ref = logic.add_volume_node(Volume(labels.astype(np.float32), (1.5, 1.5, 2.0)), "ref")
    names = {1: "right ventricle", 2: "myocardium", 3: "left ventricle", 4: "left atrium"}
    seg_node = logic.add_segmentation_node(Volume(labels, (1.5, 1.5, 2.0)), ref, names, "seg")

    def tags(node) -> dict[str, tuple[str, tuple]]:
        seg, out = node.GetSegmentation(), {}
        for i in range(seg.GetNumberOfSegments()):
            segment = seg.GetNthSegment(i)
            value = vtk.reference("")
            assert segment.GetTag("TerminologyEntry", value)
            out[segment.GetName()] = (str(value), tuple(round(c, 6) for c in segment.GetColor()))
        return out

    written = tags(seg_node)
    for name in names.values():
        assert written[name] == (
            terminology.terminology_entry(name),
            tuple(round(c, 6) for c in terminology.structure_color(name)),
        )
    scene_file = logic.save_scene(tmp_path / "scene", [ref, seg_node])
    # Read the .seg.nrrd back into a fresh scene, as Slicer does when it opens the scene.
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(scene_file.parent / "seg.seg.nrrd"))
    assert storage.ReadData(node)
    assert tags(node) == written
