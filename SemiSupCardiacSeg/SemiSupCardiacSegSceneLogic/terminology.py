"""Standard terminology and display colours of the segmented structures, read from terminology.json.

The segment tag 'TerminologyEntry' is Slicer's serialized terminology entry (as written by
``vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry`` in Slicer 5.6 and 5.10): seven
'~'-separated fields, context ~ category ~ type ~ type modifier ~ anatomic context ~ anatomic region ~
region modifier, each code as scheme^value^meaning ('^^' when absent). Slicer's terminology selector
can show and edit a segment only when its codes are entries of a loaded terminology list; the data
file names only such entries (Testing/test_terminology.py checks them against Slicer's lists).
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_FILE = Path(__file__).with_name("terminology.json")
DEFAULT_COLOR = (0.5, 0.8, 0.5)  # RGB 0..1 for structures without an entry


def _load() -> dict[str, dict]:
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))["structures"]


STRUCTURES: dict[str, dict] = _load()
# RGB 0..1 shown for each structure: its 'display_color' where the data file gives one (the cine
# structures: their recommended colours are near-identical browns), else Slicer's
# recommendedDisplayRGBValue ('color'); the file holds 0..255.
STRUCTURE_COLORS: dict[str, tuple[float, float, float]] = {
    name: tuple(c / 255.0 for c in entry.get("display_color", entry["color"])) for name, entry in STRUCTURES.items()
}
# structure -> (type code value, type meaning); the full codes are in STRUCTURES.
STRUCTURE_CODES: dict[str, tuple[str, str]] = {
    name: (entry["type"]["value"], entry["type"]["meaning"]) for name, entry in STRUCTURES.items()
}


def _code(code: dict | None) -> str:
    if not code:
        return "^^"
    return f"{code['scheme']}^{code['value']}^{code['meaning']}"


def terminology_entry(structure: str) -> str | None:
    """Slicer's serialized terminology entry (the segment tag 'TerminologyEntry') for ``structure``,
    or None when it has no standard code here."""
    entry = STRUCTURES.get(structure)
    if entry is None:
        return None
    return "~".join(
        [
            entry["context"],
            _code(entry["category"]),
            _code(entry["type"]),
            _code(entry.get("modifier")),
            entry.get("anatomic_context", ""),
            _code(entry.get("anatomic_region")),
            _code(entry.get("region_modifier")),
        ]
    )


def structure_color(structure: str) -> tuple[float, float, float]:
    """Display colour (RGB 0..1) of ``structure``; DEFAULT_COLOR when it has no entry."""
    return STRUCTURE_COLORS.get(structure, DEFAULT_COLOR)
