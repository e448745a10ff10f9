"""The original ACDC download layout: ``patientXXX/patientXXX_frameYY.nii.gz`` (+ ``_gt``) and ``Info.cfg``.

``Info.cfg`` holds ``key: value`` lines; ``ED`` and ``ES`` are the frame numbers of end-diastole and
end-systole (1-based, as in the file names). Each patient folder also holds the whole cycle as
``patientXXX_4d.nii.gz``, which is not a case and is skipped. Voxel spacing comes from the NIfTI
headers. The SSL4MIS ``.h5`` layout of ../shared/data/ACDC is read by ``io.read_h5_case``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .datasets import CaseFile

PATIENT_RE = re.compile(r"^patient\d{3}$")


@dataclass
class ACDCPatient:
    """One patient folder: its ED and ES cases (label None where ``_gt`` is missing) and Info.cfg."""

    name: str
    ed: CaseFile
    es: CaseFile
    info: dict[str, str]


def read_info_cfg(path: Path) -> dict[str, str]:
    """``key: value`` lines -> dict; ED and ES must be there and be integers."""
    if not path.is_file():
        raise InputError(f"{path.parent.name}: Info.cfg not found (expected {path})")
    info = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info[k.strip()] = v.strip()
    for key in ("ED", "ES"):
        if key not in info or not info[key].isdigit():
            raise InputError(f"{path}: '{key}' frame number missing or not an integer")
    return info


def _frame_case(folder: Path, frame: int) -> CaseFile:
    stem = f"{folder.name}_frame{frame:02d}"
    image = folder / f"{stem}.nii.gz"
    if not image.is_file():
        raise InputError(f"{folder.name}: Info.cfg names frame {frame} but {image.name} is missing")
    gt = folder / f"{stem}_gt.nii.gz"
    return CaseFile(stem, image, gt if gt.is_file() else None)


def read_acdc_patient(folder: str | Path) -> ACDCPatient:
    """A ``patientXXX`` folder -> its ED and ES cases."""
    folder = Path(folder)
    info = read_info_cfg(folder / "Info.cfg")
    return ACDCPatient(folder.name, _frame_case(folder, int(info["ED"])), _frame_case(folder, int(info["ES"])), info)


def is_acdc_folder(folder: Path) -> bool:
    """A patient folder (holds Info.cfg) or a folder of ``patientXXX`` folders."""
    return (folder / "Info.cfg").is_file() or any(p.is_dir() and PATIENT_RE.match(p.name) for p in folder.iterdir())


def find_acdc_cases(folder: str | Path) -> list[CaseFile]:
    """ED then ES case of every patient under ``folder`` (or of the patient ``folder`` itself), by name."""
    folder = Path(folder)
    if (folder / "Info.cfg").is_file():
        patients = [folder]
    else:
        patients = sorted(p for p in folder.iterdir() if p.is_dir() and PATIENT_RE.match(p.name))
    if not patients:
        raise InputError(f"no ACDC patient folders (patientXXX/ with Info.cfg) in {folder}")
    cases = []
    for p in patients:
        pat = read_acdc_patient(p)
        cases += [pat.ed, pat.es]
    return cases
