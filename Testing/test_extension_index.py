"""The Slicer ExtensionsIndex catalog entry (ExtensionsIndex/SemiSupCardiacSeg.json) against the
index's schema (Slicer's Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json: its required
fields and properties, no others allowed) and the extension's top-level CMakeLists.txt."""

from __future__ import annotations

import json
import re

from conftest import REPO

ENTRY = REPO / "ExtensionsIndex" / "SemiSupCardiacSeg.json"
SCHEMA_URL = (
    "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#"
)
PROPERTIES = {
    "$schema",
    "category",
    "scm_url",
    "scm_revision",
    "scm_type",
    "build_dependencies",
    "build_subdirectory",
    "enabled",
    "tier",
}
REQUIRED = {"$schema", "category", "scm_url"}


def _cmake_set(name: str) -> str:
    top = (REPO / "CMakeLists.txt").read_text()
    m = re.search(rf'^set\({name} "([^"]*)"\)', top, flags=re.M)
    assert m, f"{name} not set in CMakeLists.txt"
    return m.group(1)


def test_entry_parses_and_follows_the_catalog_schema():
    entry = json.loads(ENTRY.read_text(encoding="utf-8"))
    assert entry["$schema"] == SCHEMA_URL
    assert REQUIRED <= set(entry) <= PROPERTIES, set(entry) ^ PROPERTIES
    assert entry["build_dependencies"] == ["PyTorch"]
    assert isinstance(entry["tier"], int) and 1 <= entry["tier"] <= 5
    assert entry.get("scm_type", "git") == "git" and entry["scm_url"].startswith("https://")
    assert isinstance(entry["scm_revision"], str) and entry["scm_revision"]


def test_entry_matches_the_extension_cmake_lists():
    entry = json.loads(ENTRY.read_text(encoding="utf-8"))
    top = (REPO / "CMakeLists.txt").read_text()
    project = re.search(r"^project\((\w+)\)", top, flags=re.M).group(1)
    assert ENTRY.stem == project == "SemiSupCardiacSeg"  # the index names an extension by its file
    assert entry["category"] == _cmake_set("EXTENSION_CATEGORY")
    assert entry["build_dependencies"] == _cmake_set("EXTENSION_DEPENDS").split(";")
    assert entry["build_subdirectory"] == re.search(
        r"^set\(EXTENSION_BUILD_SUBDIRECTORY (\S+)\)", top, flags=re.M
    ).group(1)


def test_placeholder_url_is_declared():
    entry = json.loads(ENTRY.read_text(encoding="utf-8"))
    if "PLACEHOLDER" in entry["scm_url"]:
        assert "placeholder" in (ENTRY.parent / "README.md").read_text().lower()
