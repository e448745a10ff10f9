"""Reading and writing volumes: NRRD / NIfTI / MHA through SimpleITK, and the LA challenge ``.h5``.

Every reader returns :class:`~SemiSupCardiacSegLib.volume.Volume` (array order [i, j, k]).
Writers go through :mod:`atomic`, so a crash never leaves a half-written file.

Geometry that cannot be trusted is refused with an ``InputError`` naming the file and the cause
(``volume.check_geometry`` on what SimpleITK read, and the header itself, read first, for what
SimpleITK would silently replace by 1 mm: a NaN, zero, negative or missing spacing in NRRD,
NIfTI's ``pixdim`` or MetaImage's ``ElementSpacing``; a singular direction, which SimpleITK
cannot read at all, is named as such). Where the format leaves a choice to a guess - ``.h5`` files
store no spacing and their layout is told apart by axis sizes, a NIfTI without qform/sform has no
orientation - the guess is checked against the data where it can be, stated in
``Volume.assumptions`` and issued as an ``errors.InputWarning``; ``reading_overrides`` (the command
lines' ``--spacing`` and ``--h5-layout``) states it instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import gzip
import hashlib
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .dependencies import import_optional
from .errors import InputError, warn
from .memory import available_memory_bytes
from .volume import Volume, check_geometry

#: Overrides of what a file says or a reader would guess (set by ``reading_overrides``).
_OVERRIDES: contextvars.ContextVar[dict] = contextvars.ContextVar("semisup_reading_overrides", default={})

H5_LAYOUTS = ("xyz", "slices_first")


@contextlib.contextmanager
def reading_overrides(spacing=None, h5_layout: str | None = None):
    """Within the block, every reader uses ``spacing`` (mm, i j k) instead of the file's (the only way
    to read a file that stores none or an invalid one) and reads ``.h5`` files in ``h5_layout``
    ('xyz' | 'slices_first') instead of guessing it; each use is recorded in ``Volume.assumptions``."""
    if spacing is not None:
        sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
        if sp.size != 3 or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
            raise InputError(f"--spacing must be three finite numbers > 0 (mm), got {list(spacing)}")
        spacing = tuple(float(v) for v in sp)
    if h5_layout is not None and h5_layout not in H5_LAYOUTS:
        raise InputError(f"--h5-layout must be one of {', '.join(H5_LAYOUTS)}, got {h5_layout!r}")
    token = _OVERRIDES.set({"spacing": spacing, "h5_layout": h5_layout})
    try:
        yield
    finally:
        _OVERRIDES.reset(token)


#: LA2018 preprocessed h5 files store no geometry; their voxels are 0.625 mm isotropic.
LA_H5_SPACING_MM = (0.625, 0.625, 0.625)

ITK_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
SUPPORTED_SUFFIXES = ITK_SUFFIXES + (".h5", ".hdf5")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (hex): what identifies the input a saved output set was made from."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_suffix(path: str | os.PathLike) -> str:
    """Lower-case suffix, with ``.nii.gz`` kept whole."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _sitk():
    # imported lazily: heavy, and not needed for h5-only work
    return import_optional("SimpleITK", "reading or writing NRRD/NIfTI/MHA files")


def sitk_to_volume(image, name: str = "image") -> Volume:
    """SimpleITK image (3D, scalar) -> Volume with array [i, j, k]; untrusted geometry refused
    (``volume.check_geometry``; ``name`` is the file named in the message)."""
    sitk = _sitk()
    if image.GetDimension() != 3:
        raise InputError(f"{name}: expected a 3D image, got {image.GetDimension()}D")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{name}: expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components per voxel"
        )
    if 0 in image.GetSize():
        raise InputError(f"{name}: the image is empty (size {' x '.join(str(s) for s in image.GetSize())})")
    spacing, origin = image.GetSpacing(), image.GetOrigin()
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    override = _OVERRIDES.get().get("spacing")
    if override is not None:
        spacing = override
    check_geometry(spacing, direction, origin, name)
    arr = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    vol = Volume(np.ascontiguousarray(arr), spacing=spacing, origin=origin, direction=direction)
    if override is not None:
        vol.assumptions.append(
            f"{name}: spacing {list(override)} mm given by --spacing "
            f"(the file says {[round(float(v), 6) for v in image.GetSpacing()]})"
        )
    return vol


# ----------------------------------------------------------------- header checks (before SimpleITK)
_HEADER_BYTES = 1 << 16


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_BYTES)
    if head[:2] == b"\x1f\x8b":  # gzip (.nii.gz)
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(1024)
        except (OSError, EOFError):
            return b""
    return head


def _numbers(text: str) -> list[float]:
    return [
        float(t)
        for t in re.findall(r"[-+]?(?:nan|inf(?:inity)?|\d+\.?\d*(?:e[-+]?\d+)?|\.\d+(?:e[-+]?\d+)?)", text, re.I)
    ]


def _check_spacing_values(values: list[float], name: str, field: str) -> None:
    if _OVERRIDES.get().get("spacing") is not None:
        return  # --spacing replaces it
    sp = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(sp)):
        raise InputError(
            f"{name}: '{field}' holds a spacing that is not a number ({', '.join(f'{v:g}' for v in sp)}); "
            "SimpleITK would read it as 1 mm. Fix the header or pass --spacing SX SY SZ"
        )
    if np.any(sp == 0):
        raise InputError(
            f"{name}: '{field}' holds a zero spacing ({', '.join(f'{v:g}' for v in sp)}): the voxel size is "
            "unknown. Fix the header or pass --spacing SX SY SZ"
        )
    if np.any(sp < 0):
        raise InputError(
            f"{name}: '{field}' holds a negative spacing ({', '.join(f'{v:g}' for v in sp)}), which readers "
            "take as a flipped axis or as invalid; store the flip in the direction, or pass --spacing"
        )


def _no_spacing(name: str, what: str) -> InputError:
    return InputError(
        f"{name}: the header stores no voxel spacing ({what}); it would be read as 1 mm, which gives wrong "
        "volumes. Pass --spacing SX SY SZ (mm) if you know it"
    )


def _check_nrrd_header(head: bytes, name: str) -> list[str]:
    text = head.split(b"\n\n", 1)[0].decode("latin-1")
    fields = {}
    for line in text.splitlines()[1:]:
        if line.startswith("#") or ":" not in line or ":=" in line:
            continue
        k, v = line.split(":", 1)
        fields[k.strip().lower()] = v.strip()
    dims = _numbers(fields.get("dimension", ""))
    if not dims or int(dims[0]) != 3:
        return []  # not 3D: refused with its own message after reading
    if "space origin" in fields:
        origin = _numbers(fields["space origin"])
        if origin and not all(np.isfinite(origin)):
            raise InputError(f"{name}: origin is not finite ('space origin' {fields['space origin']}); fix the header")
    if "space directions" in fields:
        vecs = re.findall(r"\(([^)]*)\)", fields["space directions"])
        cols = [_numbers(v) for v in vecs]
        if len(cols) == 3 and all(len(c) == 3 for c in cols):
            m = np.array(cols, dtype=np.float64).T
            spacing = np.linalg.norm(m, axis=0)
            if not np.all(np.isfinite(m)):
                raise InputError(f"{name}: 'space directions' holds a value that is not a number; fix the header")
            if np.any(spacing == 0):
                raise InputError(
                    f"{name}: 'space directions' has a zero-length axis: direction is singular "
                    "(determinant is 0); the voxel grid has no valid physical geometry"
                )
            check_geometry(spacing, m / spacing, None, name)
        return []
    if "spacings" in fields:
        vals = _numbers(fields["spacings"])
        if len(vals) == 3:
            _check_spacing_values(vals, name, "spacings")
        return []
    if _OVERRIDES.get().get("spacing") is None:
        raise _no_spacing(name, "no 'spacings' or 'space directions' field")
    return []


def _check_nifti_header(head: bytes, name: str) -> list[str]:
    if len(head) < 348:
        return []
    for endian in "<>":
        size = struct.unpack(endian + "i", head[:4])[0]
        if size in (348, 540):
            break
    else:
        return []
    if size == 348:
        dim = struct.unpack(endian + "8h", head[40:56])
        pixdim = struct.unpack(endian + "8f", head[76:108])
        qcode, scode = struct.unpack(endian + "2h", head[252:256])
    else:
        if len(head) < 540:
            return []
        dim = struct.unpack(endian + "8q", head[16:80])
        pixdim = struct.unpack(endian + "8d", head[104:168])
        qcode, scode = struct.unpack(endian + "2i", head[344:352])
    if dim[0] < 3:
        return []
    override = _OVERRIDES.get().get("spacing") is not None
    sp = [float(v) for v in pixdim[1:4]]
    if not override:
        if all(v == 0 for v in sp):
            raise _no_spacing(name, "pixdim is 0")
        _check_spacing_values(sp, name, "pixdim")
    if qcode <= 0 and scode <= 0:
        return [
            f"{name}: no orientation stored (qform_code and sform_code are 0): read with identity direction "
            "and origin 0 (assumed)"
        ]
    return []


def _check_meta_header(head: bytes, name: str) -> list[str]:
    text = head.split(b"ElementDataFile", 1)[0].decode("latin-1")
    fields = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            fields[k.strip().lower()] = v.strip()
    nd = _numbers(fields.get("ndims", ""))
    if not nd or int(nd[0]) != 3:
        return []
    for key in ("elementspacing", "elementsize"):
        if key in fields:
            vals = _numbers(fields[key])
            if len(vals) == 3:
                _check_spacing_values(vals, name, "ElementSpacing" if key == "elementspacing" else "ElementSize")
            return []
    if _OVERRIDES.get().get("spacing") is None:
        raise _no_spacing(name, "no 'ElementSpacing' or 'ElementSize'")
    return []


def check_header(path: str | os.PathLike) -> list[str]:
    """Check an image file's header for geometry SimpleITK would silently replace or cannot read.

    Raises InputError naming the file and the cause; returns the assumptions reading it implies.
    A header it cannot parse is left to SimpleITK (whose failure is an InputError too)."""
    path = Path(path)
    suffix = file_suffix(path)
    try:
        head = _read_head(path)
        if suffix in (".nrrd", ".nhdr") and head.startswith(b"NRRD"):
            return _check_nrrd_header(head, path.name)
        if suffix in (".nii", ".nii.gz"):
            return _check_nifti_header(head, path.name)
        if suffix in (".mha", ".mhd"):
            return _check_meta_header(head, path.name)
    except InputError:
        raise
    except Exception:  # noqa: BLE001 - unparseable: SimpleITK decides (and fails with an InputError)
        return []
    return []


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
    ``reading_overrides(h5_layout=...)`` (``--h5-layout``) replaces the guess.
    """
    forced = _OVERRIDES.get().get("h5_layout")
    if forced is not None:
        return forced
    return "slices_first" if len(shape) == 3 and shape[0] < shape[1] and shape[0] < shape[2] else "xyz"


#: A cine stack holds at most this many slices (ACDC: 6-21); a longer "slice" axis is a guess.
MAX_H5_CINE_SLICES = 40


def h5_layout_doubt(shape: tuple[int, ...]) -> str | None:
    """Why the layout guessed from ``shape`` is doubtful (None when the data fit it well): a
    slices-first stack with more slices than a cine stack has, or an (X, Y, Z) volume whose short
    axis is not the last (the LA2018 volumes' slice axis, 88 of 576 x 576)."""
    if _OVERRIDES.get().get("h5_layout") is not None:
        return None
    if h5_layout(shape) == "slices_first":
        if shape[0] > MAX_H5_CINE_SLICES:
            return f"{shape[0]} 'slices' along the first axis is more than a cine stack holds ({MAX_H5_CINE_SLICES})"
        return None
    if shape[2] > min(shape[0], shape[1]):
        return "its shortest axis is neither the first (cine slices) nor the last (LA2018 slices)"
    return None


def read_h5_case(path: str | os.PathLike, spacing=None) -> tuple[Volume, Volume | None]:
    """Read a ``.h5`` case: dataset ``image`` (float32) and optional ``label`` (uint8).

    Two layouts (``h5_layout``): LA2018 (X, Y, Z), used as is, default spacing 0.625 mm; ACDC cine
    (slices, H, W), which is SimpleITK's array order (z, y, x), so the Volume array is its transpose
    (W, H, slices) and a result written as NRRD reads back with ``sitk.GetArrayFromImage`` in the h5's
    order; default spacing ``CINE_H5_NOMINAL_SPACING_MM``. Identity direction, origin 0.
    Returns (image, label or None).

    What is guessed is stated in the volumes' ``assumptions``: the spacing (unless ``spacing``, a
    ``spacing`` attribute of the file or of its ``image`` dataset, or ``--spacing`` gives it) and
    the layout where the axis sizes do not fit it well (``h5_layout_doubt``; ``--h5-layout``).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    h5py = import_optional("h5py", f"reading {path.name}")
    stored_spacing = None
    try:
        with h5py.File(path, "r") as f:
            if "image" not in f or not isinstance(f["image"], h5py.Dataset):
                raise InputError(f"{path.name}: h5 file has no 'image' dataset (found {list(f.keys())})")
            if f["image"].ndim != 3:
                raise InputError(f"{path.name}: expected a 3D 'image', got shape {f['image'].shape}")
            if 0 in f["image"].shape:
                raise InputError(f"{path.name}: 'image' is empty (shape {f['image'].shape})")
            if "label" in f and (not isinstance(f["label"], h5py.Dataset) or f["label"].shape != f["image"].shape):
                shape = getattr(f["label"], "shape", None)
                raise InputError(f"{path.name}: label shape {shape} differs from image shape {f['image'].shape}")
            for attrs in (f["image"].attrs, f.attrs):
                if "spacing" in attrs:
                    stored_spacing = np.asarray(attrs["spacing"], dtype=np.float64).reshape(-1)
                    break
            image = np.asarray(f["image"][()], dtype=np.float32)
            label = np.asarray(f["label"][()]) if "label" in f else None
    except InputError:
        raise
    except Exception as exc:  # h5py raises OSError/KeyError flavours for truncated files
        raise InputError(
            f"{path.name}: cannot read h5 file "
            f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
    if label is not None:
        if not (np.issubdtype(label.dtype, np.integer) or np.issubdtype(label.dtype, np.bool_)):
            if not np.all(np.isfinite(label)) or not np.all(np.equal(np.mod(label, 1), 0)):
                raise InputError(f"{path.name}: 'label' has non-integer values")
        if label.size and (label.min() < 0 or label.max() > 255):
            raise InputError(f"{path.name}: 'label' values must be in 0..255, got {label.min()}..{label.max()}")
    assumptions: list[str] = []
    layout = h5_layout(image.shape)
    doubt = h5_layout_doubt(image.shape)
    if doubt:
        assumptions.append(
            f"{path.name}: layout guessed as {layout} from the shape {tuple(image.shape)}, but {doubt}; "
            "pass --h5-layout xyz|slices_first to state it"
        )
    override = _OVERRIDES.get().get("spacing")
    if spacing is None and override is not None:
        spacing = override
        assumptions.append(f"{path.name}: spacing {list(override)} mm given by --spacing")
    elif spacing is None and stored_spacing is not None:
        spacing = stored_spacing
        if spacing.size != 3:
            raise InputError(f"{path.name}: its 'spacing' attribute holds {spacing.size} values, not 3")
        if layout == "slices_first":
            spacing = spacing[::-1]  # stored in the file's (slices, H, W) order
    elif spacing is None:
        spacing = CINE_H5_NOMINAL_SPACING_MM if layout == "slices_first" else LA_H5_SPACING_MM
        what = (
            "the ACDC cine nominal 1 mm (volumes and distances are then not physical)"
            if layout == "slices_first"
            else "the LA2018 challenge's 0.625 mm isotropic"
        )
        assumptions.append(
            f"{path.name}: the file stores no voxel spacing; read at {what} (assumed; pass --spacing "
            "SX SY SZ to state it)"
        )
    check_geometry(spacing, np.eye(3), None, path.name)
    if layout == "slices_first":
        image = np.ascontiguousarray(image.transpose(2, 1, 0))
        label = None if label is None else np.ascontiguousarray(label.transpose(2, 1, 0))
    img_vol = Volume(image, spacing=spacing, assumptions=list(assumptions))
    lab_vol = None if label is None else Volume(label.astype(np.uint8), spacing=spacing, assumptions=list(assumptions))
    return img_vol, lab_vol


def write_h5_case(
    path: str | os.PathLike,
    image: np.ndarray,
    label: np.ndarray | None = None,
    layout: str = "xyz",
    overwrite: bool = False,
) -> Path:
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
            f.create_dataset(
                "image", data=np.ascontiguousarray(image.transpose(order)).astype(np.float32), compression="gzip"
            )
            if label is not None:
                f.create_dataset(
                    "label", data=np.ascontiguousarray(label.transpose(order)).astype(np.uint8), compression="gzip"
                )
    return path


def read_volume(path: str | os.PathLike) -> Volume:
    """Read an image volume from .nrrd/.nhdr/.nii/.nii.gz/.mha/.mhd or .h5 (its 'image')."""
    path = Path(path)
    suffix = file_suffix(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(
            f"unsupported file type '{suffix}' for {path.name}; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    if suffix in (".h5", ".hdf5"):
        vol = read_h5_case(path)[0]
    else:
        vol = _read_itk(path)
    for text in vol.assumptions:
        warn(text)
    return vol


def _read_itk(path: Path) -> Volume:
    sitk = _sitk()
    assumptions = check_header(path)
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # its warnings are ours to state (check_header)
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        _check_size(
            path, reader.GetSize(), reader.GetNumberOfComponents(), sitk.GetPixelIDValueAsString(reader.GetPixelID())
        )
        image = reader.Execute()
    except InputError:
        raise
    except Exception as exc:
        first = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        raise InputError(
            f"{path.name}: cannot read image ({first[-1].strip() if first else exc.__class__.__name__})"
        ) from exc
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    vol = sitk_to_volume(image, path.name)
    vol.assumptions.extend(assumptions)
    return vol


def _check_size(path: Path, size, components: int, pixel: str) -> None:
    """Refuse a header declaring more voxels than memory can hold (before SimpleITK allocates them)."""
    n = int(np.prod([int(s) for s in size], dtype=np.float64)) * max(1, int(components))
    nbytes = n * (
        8
        if "64" in pixel or "double" in pixel
        else 4
        if "32" in pixel or "float" in pixel
        else 2
        if "16" in pixel
        else 1
    )
    avail = available_memory_bytes()  # the memory check inference uses
    limit = avail if avail else 64 << 30
    if nbytes > limit:
        raise InputError(
            f"{path.name}: the header declares {' x '.join(str(int(s)) for s in size)} voxels "
            f"({nbytes / 2**30:.1f} GiB), more than the {limit / 2**30:.1f} GiB of memory available"
        )


def read_image_info(path: str | os.PathLike) -> Volume:
    """An image file's grid (shape, spacing, origin, direction; geometry checked as ``read_volume``
    does) without reading its voxels: the returned Volume's array is a read-only zero view."""
    path = Path(path)
    suffix = file_suffix(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(
            f"unsupported file type '{suffix}' for {path.name}; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    if suffix in (".h5", ".hdf5"):
        return read_h5_case(path)[0]
    sitk = _sitk()
    check_header(path)
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        size = reader.GetSize()
        spacing, origin, direction = reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()
    except Exception as exc:
        first = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        raise InputError(
            f"{path.name}: cannot read image ({first[-1].strip() if first else exc.__class__.__name__})"
        ) from exc
    if len(size) != 3:
        raise InputError(f"{path.name}: expected a 3D image, got {len(size)}D")
    override = _OVERRIDES.get().get("spacing")
    spacing = override if override is not None else spacing
    direction = np.array(direction, dtype=np.float64).reshape(3, 3)
    check_geometry(spacing, direction, origin, path.name)
    vol = Volume(np.zeros((1, 1, 1), np.uint8), spacing=spacing, origin=origin, direction=direction)
    vol.array = np.broadcast_to(np.uint8(0), tuple(int(s) for s in size))
    return vol


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
        if not np.all(np.isfinite(arr)) or not np.all(np.equal(np.mod(arr, 1), 0)):
            raise InputError(f"{Path(path).name}: label map has non-integer values")
        vol = vol.with_array(arr.astype(np.int64))
    return (
        vol.with_array(vol.array.astype(np.uint8))
        if vol.array.max(initial=0) < 256 and vol.array.min(initial=0) >= 0
        else vol
    )


def check_label_values(array: np.ndarray, num_classes: int, name: str, labels: dict | None = None) -> None:
    """The one label convention of every command (training, evaluate, indices): voxel values are the
    class indices 0..num_classes-1. Refuses anything else naming the file, and says so when the map
    looks like a 0/255 (or 0/1 scaled) mask."""
    values = np.unique(np.asarray(array))
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size == 0:
        return
    shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if values.size > 8 else "")
    hint = ""
    if set(int(v) for v in values) <= {0, 255}:
        hint = "; it looks like a 0/255 mask: store the structure as 1 (e.g. divide by 255)"
    names = f" ({', '.join(f'{k} {v}' for k, v in sorted(labels.items()))})" if labels else ""
    raise InputError(f"{name}: label values {shown} but the labels must be 0..{num_classes - 1}{names}{hint}")


def write_volume(
    volume: Volume,
    path: str | os.PathLike,
    overwrite: bool = False,
    compress: bool = True,
    compression_level: int = -1,
) -> Path:
    """Write a Volume (geometry kept) atomically; format from the suffix (.nrrd, .nii.gz, .mha).

    compress: gzip (NRRD, NIfTI) or zlib (MHA); compression_level 1 (fastest) .. 9, -1 ITK's default.
    Refuses to overwrite an existing file unless ``overwrite=True``.
    """
    sitk = _sitk()
    path = Path(path)
    if file_suffix(path) not in ITK_SUFFIXES:
        raise InputError(f"cannot write '{file_suffix(path)}'; use one of {', '.join(ITK_SUFFIXES)}")
    image = volume_to_sitk(volume)
    with atomic_path(path, overwrite=overwrite) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), compress, compression_level)
        except RuntimeError as exc:  # ITK's message is long and may not say why: find the cause
            raise _write_failure(path, tmp, exc, volume.array.nbytes) from exc
    return path


def _write_failure(path: Path, tmp: Path, exc: Exception, nbytes: int) -> Exception:
    """The clearest error for a failed image write: OSError ENOSPC / EROFS / EACCES naming ``path``
    when the folder is full, read-only or not writable, else an InputError with ITK's last line."""

    text = str(exc)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = None
    if "No space left" in text or (free is not None and free < nbytes + (1 << 20)):
        return OSError(errno.ENOSPC, "no space left on device", str(path))
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return OSError(errno.EROFS, "read-only file system", str(path))
    except (OSError, AttributeError):
        pass
    if not os.access(folder, os.W_OK):
        return OSError(errno.EACCES, "permission denied", str(path))
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return InputError(f"{path}: cannot write image ({lines[-1] if lines else exc.__class__.__name__})")
