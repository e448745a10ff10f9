"""Static checks of the Slicer module files that cannot be imported without the Slicer GUI.

The widget code, the .ui and the parameter node must agree: every ``self.ui.NAME`` the widget uses
exists in the .ui, and every ``SlicerParameterName`` in the .ui is a field of the parameter node.
The CMake lists name files that exist.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET

from conftest import REPO

MODULE_DIR = REPO / "SemiSupCardiacSeg"
MODULE_FILE = MODULE_DIR / "SemiSupCardiacSeg.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SemiSupCardiacSeg.ui"


def _ui_widgets() -> dict[str, dict[str, str]]:
    """widget name -> {property name: text} for every widget in the .ui."""
    widgets = {}
    for w in ET.parse(UI_FILE).getroot().iter("widget"):
        props = {p.get("name"): "".join(p.itertext()).strip() for p in w.findall("property")}
        widgets[w.get("name")] = props
    return widgets


def _parameter_fields() -> set[str]:
    tree = ast.parse(MODULE_FILE.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SemiSupCardiacSegParameterNode")
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}


def test_module_file_parses_and_defines_slicer_classes():
    tree = ast.parse(MODULE_FILE.read_text())
    classes = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    for suffix in ("", "Widget", "Logic", "Test", "ParameterNode"):
        assert f"SemiSupCardiacSeg{suffix}" in classes


def test_widget_uses_only_widgets_of_the_ui():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_FILE.read_text()))
    missing = used - set(_ui_widgets())
    assert used and not missing, f"widget code uses {sorted(missing)} which the .ui does not define"


def test_ui_parameter_names_are_parameter_node_fields():
    bound = {p["SlicerParameterName"] for p in _ui_widgets().values() if "SlicerParameterName" in p}
    fields = _parameter_fields()
    assert bound and bound <= fields, f"unbound: {sorted(bound - fields)}"
    assert "inputVolume" in bound


def test_cmake_lists_name_existing_files():
    text = (MODULE_DIR / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "SemiSupCardiacSeg")
    listed = re.findall(r"^\s+([\w/]+\.(?:py|png|ui|json))\s*$", text, flags=re.M)
    assert len(listed) >= 5
    for rel in listed:
        assert (MODULE_DIR / rel).is_file(), rel
    top = (REPO / "CMakeLists.txt").read_text()
    for needed in (
        "project(SemiSupCardiacSeg)",
        "find_package(Slicer",
        "add_subdirectory(SemiSupCardiacSeg)",
        "EXTENSION_DEPENDS",
        "EXTENSION_CATEGORY",
    ):
        assert needed in top


def test_every_mrml_widget_of_the_ui_gets_the_scene():
    """A qMRMLNodeComboBox lists nodes only once it has the scene: the .ui must forward the module
    widget's mrmlSceneChanged to each one (a selector without it shows an empty list in Slicer)."""
    root = ET.parse(UI_FILE).getroot()
    selectors = {w.get("name") for w in root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    connected = {
        c.findtext("receiver")
        for c in root.iter("connection")
        if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    assert selectors and selectors <= connected, f"no scene for {sorted(selectors - connected)}"
    custom = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert {c for c in used if c.startswith(("ctk", "qMRML"))} <= custom


def test_cmake_minimum_is_slicer_5_10_extension_templates():
    """Slicer 5.10's extension template (Utilities/Templates/Extensions/Default/CMakeLists.txt at
    v5.10.0) starts with cmake_minimum_required(VERSION 3.20.6...3.22.6 FATAL_ERROR)."""
    top = (REPO / "CMakeLists.txt").read_text()
    m = re.search(r"cmake_minimum_required\(VERSION\s+(\d+(?:\.\d+)*)(?:\.\.\.(\d+(?:\.\d+)*))?\s+FATAL_ERROR\)", top)
    assert m, "no cmake_minimum_required(VERSION ... FATAL_ERROR)"
    assert top.lstrip().startswith("cmake_minimum_required"), "cmake_minimum_required must come first"
    assert (m.group(1), m.group(2)) == ("3.20.6", "3.22.6")
    for field in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
    ):
        assert re.search(rf"^set\({field} ", top, flags=re.M), field
    assert re.search(r'^set\(EXTENSION_DEPENDS "PyTorch"\)', top, flags=re.M)
