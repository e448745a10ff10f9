"""Reading and writing volumes: NRRD / NIfTI / MHA through SimpleITK, and the LA challenge ``.h5``.

Every reader returns :class:`~SemiSupCardiacSegLib.volume.Volume` (array order [i, j, k]).
Writers go through :mod:`atomic`, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .dependencies import import_optional
from .errors import InputError  # noqa: F401 (defined there, without numpy; re-exported here)
from .volume import Volume

#: LA2018 preprocessed h5 files store no geometry; their voxels are 0.625 mm isotropic.
LA_H5_SPACING_MM = (0.625, 0.625, 0.625)

ITK_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
SUPPORTED_SUFFIXES = ITK_SUFFIXES + (".h5", ".hdf5")


def file_suffix(path: str | os.PathLike) -> str:
    """Lower-case suffix, with ``.nii.gz`` kept whole."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _sitk():
    # imported lazily: heavy, and not needed for h5-only work
    return import_optional("SimpleITK", "reading or writing NRRD/NIfTI/MHA files")


def sitk_to_volume(image) -> Volume:
    """SimpleITK image (3D, scalar) -> Volume with array [i, j, k]."""
    sitk = _sitk()
    if image.GetDimension() != 3:
        raise InputError(f"expected a 3D image, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components per voxel")
    arr = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return Volume(
        np.ascontiguousarray(arr),
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=np.array(image.GetDirection()).reshape(3, 3),
    )


def volume_to_sitk(volume: Volume):
    """Volume -> SimpleITK image with the same geometry."""
    sitk = _sitk()
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in volume.spacing))
    image.SetOrigin(tuple(float(o) for o in volume.origin))
    image.SetDirection(tuple(float(d) for d in volume.direction.reshape(-1)))
    return image


#: ACDC (SSL4MIS layout) h5 files store no geometry either; their slices get this nominal spacing.
#: ACDC's real in-plane spacing is 1.37-1.68 mm and slices 5-10 mm apart: pass the true spacing
#: where absolute volumes matter (``cardiac_indices``).
CINE_H5_NOMINAL_SPACING_MM = (1.0, 1.0, 1.0)


def h5_layout(shape: tuple[int, ...]) -> str:
    """'slices_first' for cine stacks stored (slices, H, W) (ACDC), else 'xyz' (LA2018's (X, Y, Z)).

    The two known layouts differ in where the short axis is: ACDC's slice axis (6-18) comes first,
    LA2018's (88 slices) last. A first axis strictly shorter than both others means slices first.
    """
    return "slices_first" if len(shape) == 3 and shape[0] < shape[1] and shape[0] < shape[2] else "xyz"


def read_h5_case(path: str | os.PathLike, spacing=None) -> tuple[Volume, Volume | None]:
    """Read a ``.h5`` case: dataset ``image`` (float32) and optional ``label`` (uint8).

    Two layouts (``h5_layout``): LA2018 (X, Y, Z), used as is, default spacing 0.625 mm; ACDC cine
    (slices, H, W), which is SimpleITK's array order (z, y, x), so the Volume array is its transpose
    (W, H, slices) and a result written as NRRD reads back with ``sitk.GetArrayFromImage`` in the h5's
    order; default spacing ``CINE_H5_NOMINAL_SPACING_MM``. Identity direction, origin 0.
    Returns (image, label or None).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    h5py = import_optional("h5py", f"reading {path.name}")
    try:
        with h5py.File(path, "r") as f:
            if "image" not in f:
                raise InputError(f"{path.name}: h5 file has no 'image' dataset (found {list(f.keys())})")
            image = np.asarray(f["image"][()], dtype=np.float32)
            label = np.asarray(f["label"][()]) if "label" in f else None
    except InputError:
        raise
    except Exception as exc:  # h5py raises OSError/KeyError flavours for truncated files
        raise InputError(f"{path.name}: cannot read h5 file ({exc.__class__.__name__}: {exc})") from exc
    if image.ndim != 3:
        raise InputError(f"{path.name}: expected a 3D 'image', got shape {image.shape}")
    if label is not None and label.shape != image.shape:
        raise InputError(f"{path.name}: label shape {label.shape} differs from image shape {image.shape}")
    if h5_layout(image.shape) == "slices_first":
        spacing = CINE_H5_NOMINAL_SPACING_MM if spacing is None else spacing
        image = np.ascontiguousarray(image.transpose(2, 1, 0))
        label = None if label is None else np.ascontiguousarray(label.transpose(2, 1, 0))
    else:
        spacing = LA_H5_SPACING_MM if spacing is None else spacing
    img_vol = Volume(image, spacing=spacing)
    lab_vol = None if label is None else Volume(label.astype(np.uint8), spacing=spacing)
    return img_vol, lab_vol


def write_h5_case(path: str | os.PathLike, image: np.ndarray, label: np.ndarray | None = None,
                  layout: str = "xyz", overwrite: bool = False) -> Path:
    """Write a case as ``.h5`` (gzip, atomically): the inverse of ``read_h5_case``.

    image: float array in Volume order [i, j, k]; label: uint8, same shape, or None (unlabeled).
    layout: "xyz" (LA2018: stored as is) or "slices_first" (ACDC cine: stored transposed to
    (slices, H, W)). Refuses to replace an existing file unless ``overwrite``.
    """
    if layout not in ("xyz", "slices_first"):
        raise ValueError(f"layout must be 'xyz' or 'slices_first', got {layout!r}")
    if label is not None and label.shape != image.shape:
        raise InputError(f"label shape {label.shape} differs from image shape {image.shape}")
    order = (2, 1, 0) if layout == "slices_first" else (0, 1, 2)
    path = Path(path)
    h5py = import_optional("h5py", f"writing {path.name}")
    with atomic_path(path, overwrite=overwrite) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("image", data=np.ascontiguousarray(image.transpose(order)).astype(np.float32), compression="gzip")
            if label is not None:
                f.create_dataset("label", data=np.ascontiguousarray(label.transpose(order)).astype(np.uint8), compression="gzip")
    return path


def read_volume(path: str | os.PathLike) -> Volume:
    """Read an image volume from .nrrd/.nhdr/.nii/.nii.gz/.mha/.mhd or .h5 (its 'image')."""
    path = Path(path)
    suffix = file_suffix(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(f"unsupported file type '{suffix}' for {path.name}; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    if suffix in (".h5", ".hdf5"):
        return read_h5_case(path)[0]
    sitk = _sitk()
    try:
        image = sitk.ReadImage(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise InputError(f"{path.name}: cannot read image ({first[-1] if first else exc.__class__.__name__})") from exc
    return sitk_to_volume(image)


def read_label(path: str | os.PathLike) -> Volume:
    """Read a label map (integer voxels); an .h5 must contain a 'label' dataset."""
    if file_suffix(path) in (".h5", ".hdf5"):
        _, label = read_h5_case(path)
        if label is None:
            raise InputError(f"{Path(path).name}: h5 file has no 'label' dataset")
        return label
    vol = read_volume(path)
    if not np.issubdtype(vol.array.dtype, np.integer):
        arr = vol.array
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise InputError(f"{Path(path).name}: label map has non-integer values")
        vol = vol.with_array(arr.astype(np.int32))
    return vol.with_array(vol.array.astype(np.uint8)) if vol.array.max(initial=0) < 256 and vol.array.min(initial=0) >= 0 else vol


def write_volume(volume: Volume, path: str | os.PathLike, overwrite: bool = False, compress: bool = True) -> Path:
    """Write a Volume (geometry kept) atomically; format from the suffix (.nrrd, .nii.gz, .mha).

    Refuses to overwrite an existing file unless ``overwrite=True``.
    """
    sitk = _sitk()
    path = Path(path)
    if file_suffix(path) not in ITK_SUFFIXES:
        raise InputError(f"cannot write '{file_suffix(path)}'; use one of {', '.join(ITK_SUFFIXES)}")
    image = volume_to_sitk(volume)
    with atomic_path(path, overwrite=overwrite) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return path
