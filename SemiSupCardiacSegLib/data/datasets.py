"""Cases on disk -> model-space arrays in memory -> random training crops with SDM targets.

A *case* is an image file with an optional label:
* ``.h5`` (LA challenge layout): datasets ``image`` and, for labeled cases, ``label``;
* ``NAME.nrrd`` / ``.nii.gz`` / ``.mha`` with its label beside it as ``NAME_label.<ext>`` or
  ``NAME-label.<ext>`` (Slicer's labelmap naming);
* the original ACDC layout (``data.acdc``): a folder of ``patientXXX/`` folders, or one of them,
  gives each patient's ED and ES frames with their ``_gt`` labels.
A folder is scanned for such cases; a ``.list`` file names cases (one per line, with or without
suffix) relative to the list's folder or its ``train/`` / ``val/`` subfolder (the LA/ACDC layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..dependencies import import_optional
from ..errors import InputError
from ..io import SUPPORTED_SUFFIXES, check_label_values, file_suffix, read_h5_case, read_label, read_volume
from ..preprocessing import Preprocessing, labels_to_model_space, to_model_space
from ..sdm import multiclass_sdm
from .transforms import random_background_field, random_crop, random_fold, random_intensity, random_rot_flip

LABEL_MARKERS = ("_label", "-label")


@dataclass
class CaseFile:
    """An image path and its label path (None when unlabeled)."""

    name: str
    image: Path
    label: Path | None  # for .h5, the image path itself when it holds a 'label' dataset


@dataclass
class Case:
    """A case in model space. image: (X, Y, Z) float32; label: (X, Y, Z) uint8 or None."""

    name: str
    image: np.ndarray
    label: np.ndarray | None


def _stem(path: Path) -> str:
    suffix = file_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _h5_has_label(path: Path) -> bool:
    h5py = import_optional("h5py", f"reading {path.name}")
    try:
        with h5py.File(path, "r") as f:
            return "label" in f
    except Exception as exc:  # h5py raises OSError flavours for truncated or non-HDF5 files
        raise InputError(f"{path.name}: cannot read h5 file ({exc.__class__.__name__}: {exc})") from exc


def _case_from_image(path: Path) -> CaseFile:
    if file_suffix(path) in (".h5", ".hdf5"):
        return CaseFile(_stem(path), path, path if _h5_has_label(path) else None)
    stem, suffix = _stem(path), file_suffix(path)
    for marker in LABEL_MARKERS:
        cand = path.with_name(stem + marker + suffix)
        if cand.exists():
            return CaseFile(stem, path, cand)
    return CaseFile(stem, path, None)


def find_cases(source: str | Path) -> list[CaseFile]:
    """Cases of a folder, a ``.list`` file, or a single image file; sorted by name for folders."""
    source = Path(source)
    if source.is_dir():
        from .acdc import find_acdc_cases, is_acdc_folder

        if is_acdc_folder(source):
            return find_acdc_cases(source)
        files = sorted(
            p
            for p in source.iterdir()
            if p.is_file()
            and file_suffix(p) in SUPPORTED_SUFFIXES
            and not any(_stem(p).endswith(m) for m in LABEL_MARKERS)
        )
        if not files:
            raise InputError(f"no images found in folder {source} (looked for {', '.join(SUPPORTED_SUFFIXES)})")
        return [_case_from_image(p) for p in files]
    if source.suffix == ".list":
        try:
            names = [ln.strip() for ln in source.read_text().splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{source}: cannot read the case list ({exc.__class__.__name__}: {exc})") from exc
        cases = []
        for name in names:
            for folder in (source.parent, source.parent / "train", source.parent / "val"):
                hits = [folder / name] + [folder / (name + s) for s in SUPPORTED_SUFFIXES]
                hit = next((h for h in hits if h.is_file()), None)
                if hit is not None:
                    cases.append(_case_from_image(hit))
                    break
            else:
                raise InputError(f"{source.name}: case '{name}' not found next to the list")
        return cases
    if source.is_file():
        return [_case_from_image(source)]
    raise InputError(f"no such folder, list or file: {source}")


def load_case(case: CaseFile, prep: Preprocessing, num_classes: int) -> Case:
    """Read a case and bring image (and label) to model space."""
    if file_suffix(case.image) in (".h5", ".hdf5"):
        image, label = read_h5_case(case.image)
    else:
        image = read_volume(case.image)
        label = read_label(case.label) if case.label is not None else None
    msi = to_model_space(image, prep)
    lab = None
    if label is not None:
        if not label.array.any():
            raise InputError(
                f"{case.name}: the label map is empty (no structure labelled); remove the label file "
                "to use the case as unlabeled"
            )
        check_label_values(label.array, num_classes, Path(case.label or case.image).name)
        lab = labels_to_model_space(label, msi, num_classes)
    return Case(case.name, msi.array, lab)


class CropDataset(Dataset):
    """Random crops of in-memory cases. Indexed by (case_index, sample_seed) from the sampler.

    Returns dict: image (1, X, Y, Z) float32; label (X, Y, Z) int64 (zeros if unlabeled);
    sdm (K-1, X, Y, Z) float32 normalized SDM of the crop's label (zeros if unlabeled);
    labeled: bool. SDM targets are computed here, i.e. in the DataLoader workers.
    """

    def __init__(
        self,
        cases: Sequence[Case],
        crop_size: tuple[int, int, int],
        num_classes: int,
        augment: bool = True,
        with_sdm: bool = True,
        intensity: bool = False,
        fold: float = 0.0,
        field: float = 0.0,
    ):
        self.cases = list(cases)
        self.crop_size = tuple(int(c) for c in crop_size)
        self.num_classes = num_classes
        self.augment = augment
        self.with_sdm = with_sdm  # False: no 'sdm' key (a caller computing SDM targets itself)
        self.intensity = intensity  # with augment: random_intensity on each crop
        # with augment: random_fold with this probability on each labeled crop (the unlabeled ones
        # are left as they are: a teacher's pseudo-labels on a folded crop would teach the failure)
        self.fold = float(fold)
        # with augment: random_background_field with this probability on each labeled crop, after
        # any fold (a negative for it: dark structureless noise labelled background)
        self.field = float(field)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, key) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, 0)
        case = self.cases[index]
        rng = np.random.default_rng(seed)
        image, label = case.image, case.label
        if self.augment:
            image, label = random_rot_flip(image, label, rng)
        image, label = random_crop(image, label, self.crop_size, rng)
        if self.augment and self.intensity:
            image = random_intensity(image, rng)
        if self.augment and self.fold > 0 and label is not None and rng.random() < self.fold:
            image = random_fold(image, rng)
        if self.augment and self.field > 0 and label is not None and rng.random() < self.field:
            image, label = random_background_field(image, label, rng)
        out = {"image": torch.from_numpy(image[None].astype(np.float32)), "labeled": label is not None}
        if label is not None:
            out["label"] = torch.from_numpy(label.astype(np.int64))
        else:
            out["label"] = torch.zeros(self.crop_size, dtype=torch.int64)
        if self.with_sdm:
            out["sdm"] = (
                torch.from_numpy(multiclass_sdm(label, self.num_classes))
                if label is not None
                else torch.zeros((self.num_classes - 1,) + self.crop_size, dtype=torch.float32)
            )
        return out
