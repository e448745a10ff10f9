"""The Volume: a voxel array with its physical geometry, and the geometry helpers that act on it.

Conventions (the only place they are defined):

* ``Volume.array[i, j, k]`` is voxel index ``(i, j, k)``: axis 0 is the fastest-varying ITK/NRRD
  axis ("x"). SimpleITK's ``GetArrayFromImage`` returns ``[k, j, i]``; we transpose on the way in/out.
* ``spacing`` is in mm per voxel along (i, j, k); ``origin`` is the physical position (mm, LPS as in
  ITK) of voxel (0, 0, 0)'s centre; ``direction`` is a 3x3 matrix whose *columns* are the physical
  unit vectors of the i, j, k axes.  physical = origin + direction @ (spacing * index).
* The LA challenge ``.h5`` files carry no geometry: they are read with spacing 0.625 mm, identity
  direction and origin 0, so NRRD voxel (i, j, k) = h5 array ``[i, j, k]``.
* A geometry is trusted only when ``check_geometry`` accepts it: finite spacing > 0, finite origin,
  a direction that is finite, not singular (determinant 0) and not sheared (columns orthonormal
  within ``ORTHOGONALITY_TOL``). Files and Slicer nodes are both checked by it, so the command
  line and the Slicer module refuse the same inputs with the same words.
* ``Volume.assumptions``: what a reader had to assume about the file (a spacing the format does
  not store, a layout told apart by axis sizes); the command lines print them as warnings and put
  them in ``report.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

# LPS <-> RAS flips the first two physical axes; the matrix is its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Largest |D^T D - I| entry accepted for a direction matrix D (its columns must be orthonormal).
ORTHOGONALITY_TOL = 1e-4


def check_geometry(spacing, direction, origin=None, name: str = "image") -> None:
    """Refuse a geometry that cannot be trusted (InputError naming ``name`` and the cause): spacing
    not finite or <= 0, origin not finite, direction not finite, singular or sheared."""
    from .errors import InputError

    sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.size != 3 or not np.all(np.isfinite(sp)):
        raise InputError(f"{name}: voxel spacing is not a finite number ({_fmt(sp)}); give the file a valid spacing")
    if np.any(sp <= 0):
        raise InputError(f"{name}: voxel spacing must be > 0 mm, got {_fmt(sp)}")
    if origin is not None and not np.all(np.isfinite(np.asarray(origin, dtype=np.float64))):
        raise InputError(f"{name}: origin is not finite ({_fmt(origin)})")
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(d)):
        raise InputError(f"{name}: direction matrix is not finite ({_fmt(d)})")
    det = float(np.linalg.det(d))
    if abs(det) < 1e-6:
        raise InputError(
            f"{name}: direction is singular (determinant is 0: two axes are parallel or one is zero); "
            "the voxel grid has no valid physical geometry"
        )
    err = float(np.abs(d.T @ d - np.eye(3)).max())
    if err > ORTHOGONALITY_TOL:
        norms = np.linalg.norm(d, axis=0)
        cos = (d.T @ d) / np.outer(norms, norms)
        worst = float(np.abs(cos - np.diag(np.diag(cos))).max())
        raise InputError(
            f"{name}: direction is sheared (axes not orthogonal: largest |cos| between axes {worst:.3g}); "
            "resample the volume onto an orthogonal grid first"
        )


def _fmt(values) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in np.asarray(values, dtype=np.float64).reshape(-1)) + "]"


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid without voxels (``Volume.grid``): shape (I, J, K), spacing (3,) mm, origin (3,) mm,
    direction (3, 3), as ``Volume`` defines them."""

    shape: tuple[int, int, int]
    spacing: np.ndarray
    origin: np.ndarray
    direction: np.ndarray

    def same_grid(self, other: "Grid | Volume", atol: float = 1e-4) -> bool:
        """True when both share shape, spacing, origin and direction."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )


@dataclass
class Volume:
    """A 3D image or label map on a physical grid, or a stack of such maps sharing it.

    array: (I, J, K) numpy array, any dtype, or (C, I, J, K) with a leading channel axis (e.g. K
    class probabilities). spacing: (3,) mm. origin: (3,) mm. direction: (3, 3).
    """

    array: np.ndarray
    spacing: np.ndarray = field(default_factory=lambda: np.ones(3))
    origin: np.ndarray = field(default_factory=lambda: np.zeros(3))
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    #: what the reader assumed about this file (see the module docstring); not part of the grid
    assumptions: list = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.spacing = np.asarray(self.spacing, dtype=np.float64).reshape(3)
        self.origin = np.asarray(self.origin, dtype=np.float64).reshape(3)
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if self.array.ndim not in (3, 4):
            raise ValueError(f"Volume needs a 3D array (or 4D, channels first), got shape {self.array.shape}")
        if not np.all(np.isfinite(self.spacing)) or np.any(self.spacing <= 0):
            raise ValueError(f"spacing must be finite and > 0 mm, got {self.spacing.tolist()}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The grid's shape (I, J, K) (without the channel axis)."""
        return tuple(int(s) for s in self.array.shape[-3:])  # type: ignore[return-value]

    @property
    def channels(self) -> int | None:
        """C of a (C, I, J, K) array; None for a plain (I, J, K) map."""
        return int(self.array.shape[0]) if self.array.ndim == 4 else None

    @property
    def grid(self) -> Grid:
        """The geometry alone."""
        return Grid(self.shape, self.spacing, self.origin, self.direction)

    def with_array(self, array: np.ndarray) -> "Volume":
        """Same geometry (and assumptions), new voxels: (I, J, K) or (C, I, J, K) on the same grid."""
        if tuple(array.shape[-3:]) != self.shape:
            raise ValueError(f"array shape {array.shape} does not match grid {self.shape}")
        return replace(self, array=array)

    def index_to_physical(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous voxel index (i, j, k, 1) to physical mm (LPS)."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    def same_grid(self, other: "Grid | Volume", atol: float = 1e-4) -> bool:
        """True when both share shape, spacing, origin and direction."""
        return self.grid.same_grid(other, atol)

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix mapping voxel index (i, j, k, 1) to RAS mm, as Slicer's IJKToRAS matrix.

        RAS = diag(-1, -1, 1) @ LPS: Slicer scenes are RAS, ITK files (and this Volume) are LPS.
        """
        return LPS_TO_RAS @ self.index_to_physical()

    @classmethod
    def from_ijk_to_ras(cls, array: np.ndarray, ijk_to_ras: np.ndarray) -> "Volume":
        """Volume from an (I, J, K) array and a 4x4 IJK-to-RAS matrix (Slicer's convention).

        Raises InputError (a ValueError) when the matrix is not an orthogonal direction times
        positive spacing (``check_geometry``: "direction is sheared", "determinant is 0", ...).
        """
        lps = LPS_TO_RAS @ np.asarray(ijk_to_ras, dtype=np.float64).reshape(4, 4)
        axes = lps[:3, :3]
        spacing = np.linalg.norm(axes, axis=0)
        if not np.all(np.isfinite(axes)) or np.any(spacing <= 0):
            check_geometry(spacing, np.eye(3), lps[:3, 3], "IJK-to-RAS matrix")  # raises: zero or non-finite axis
        direction = axes / spacing
        check_geometry(
            spacing, direction, lps[:3, 3], "IJK-to-RAS matrix"
        )  # the file readers' words: sheared, singular
        return cls(array=array, spacing=spacing, origin=lps[:3, 3], direction=direction)

    def crop(self, box: tuple[slice, slice, slice]) -> "Volume":
        """The sub-volume ``array[box]`` with its geometry (origin moved to the box's first voxel)."""
        starts = np.array([b.start or 0 for b in box], dtype=float)
        origin = np.asarray(self.origin, float) + np.asarray(self.direction, float) @ (
            starts * np.asarray(self.spacing, float)
        )
        return Volume(np.ascontiguousarray(self.array[box]), self.spacing, origin, self.direction)

    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (spacing in mm; 1 mL = 1000 mm^3)."""
        return float(np.prod(self.spacing)) / 1000.0


@dataclass(frozen=True)
class AxisReorientation:
    """A permutation and flip of voxel axes that brings a volume to the closest canonical grid.

    ``perm[a]`` is the input axis that becomes output axis ``a``; ``flip[a]`` says whether that
    output axis is reversed. Pure index shuffling: no interpolation, exactly invertible.
    """

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]

    def apply(self, array: np.ndarray) -> np.ndarray:
        """(I, J, K, ...) input-axis array -> canonical-axis array (extra trailing axes kept)."""
        out = np.transpose(array, self.perm + tuple(range(3, array.ndim)))
        for a, f in enumerate(self.flip):
            if f:
                out = np.flip(out, axis=a)
        return np.ascontiguousarray(out)

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Canonical-axis array -> input-axis array (inverse of ``apply``)."""
        out = array
        for a, f in enumerate(self.flip):
            if f:
                out = np.flip(out, axis=a)
        inv = tuple(int(i) for i in np.argsort(self.perm))
        return np.ascontiguousarray(np.transpose(out, inv + tuple(range(3, array.ndim))))


def canonical_reorientation(direction: np.ndarray) -> AxisReorientation:
    """Axis permutation/flip that makes ``direction`` closest to identity (the training grid).

    For each physical axis (x, y, z) we pick the voxel axis most aligned with it (greedy on the
    largest absolute cosine, so oblique volumes get a well-defined answer) and flip it when it
    points the negative way. The networks are trained on identity-direction volumes, so this is
    what makes a Slicer/NRRD volume in another orientation look like the training data.
    """
    d = np.abs(np.asarray(direction, dtype=np.float64).reshape(3, 3))
    perm = [-1, -1, -1]
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    for _ in range(3):
        best = (-1.0, -1, -1)
        for r in range(3):
            for c in range(3):
                if r not in used_rows and c not in used_cols and d[r, c] > best[0]:
                    best = (d[r, c], r, c)
        _, r, c = best
        perm[r] = c
        used_rows.add(r)
        used_cols.add(c)
    direction = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    flip = tuple(bool(direction[a, perm[a]] < 0) for a in range(3))
    return AxisReorientation(perm=tuple(perm), flip=flip)  # type: ignore[arg-type]


def reorient_volume(volume: Volume, reo: AxisReorientation) -> Volume:
    """Apply ``reo`` to a volume, keeping every voxel at the same physical position."""
    shape = np.array(volume.shape)
    new_dir = np.empty((3, 3))
    new_spacing = np.empty(3)
    # Physical position of the new origin voxel: index 0 along each new axis, which is the last
    # index of the input axis where that axis is flipped.
    start_index = np.zeros(3)
    for a, (src, f) in enumerate(zip(reo.perm, reo.flip)):
        col = volume.direction[:, src] * (-1.0 if f else 1.0)
        new_dir[:, a] = col
        new_spacing[a] = volume.spacing[src]
        if f:
            start_index[src] = shape[src] - 1
    new_origin = volume.origin + volume.direction @ (volume.spacing * start_index)
    return Volume(reo.apply(volume.array), new_spacing, new_origin, new_dir)


def mask_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Index box (one slice per axis) around the nonzero voxels of ``mask`` (which must hold one)."""
    return tuple(slice(int(ix.min()), int(ix.max()) + 1) for ix in np.nonzero(mask))
