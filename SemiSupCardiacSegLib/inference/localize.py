"""Coarse localization for a large field of view: find the structure cheaply, segment a crop around it.

A scanner's full field of view (e.g. 576 x 576 x 88 voxels at 0.625 mm, 360 x 360 x 55 mm) holds
the left atrium in a small part, and the full pass (overlapping windows, MC dropout, TTA) over all
of it costs ~20x a crop around the atrium. Here (the idea of the 2018 LA challenge's best entries:
a coarse localization stage, then a fine segmentation of the cropped atrium, done with one network):

1. **Coarse pass**: the same network, once per non-overlapping window (overlap 0, no TTA, no MC,
   segmentation head only) over the whole model-space image -> foreground probability.
2. **The structure**: the 26-connected component of ``p_fg > 0.5`` with the largest probability
   mass (the rule of ``postprocess.labels_from_probs``).
3. **The crop**: its bounding box grown on every side by a margin between ``MIN_MARGIN_MM`` and
   ``MARGIN_MM``, per axis the largest that needs no more fine-pass windows than the smallest
   (``margins_for_windows``: the fine pass costs per window, and a crop a few mm past a row of
   windows pays a whole row), mapped onto the input grid (``model_box_to_input``; reorientation and
   resampling undone exactly, rounded outwards).

The caller (``Predictor.predict``) runs the full pass on the crop and maps it back
(``Prediction.uncrop``: outside the crop no structure, background probability 1, uncertainty 0).
The whole volume is segmented instead, and ``report.json`` says why (``Localization.reason``),
when: the model grid is smaller than ``MIN_WINDOWS`` windows (nothing to gain: the LA training
crops are ~2 windows), the coarse pass finds nothing, it is ambiguous (a second component with more
than ``AMBIGUOUS_SHARE`` of the first one's mass), or the crop would hold more than ``MAX_CROP_SHARE``
of the volume. After the fine pass, a structure touching a crop face that lies inside the volume
may have been cut: the caller then segments the whole volume too (``touches_inner_face``).
3D models only (a cine model's stacks are already slice-wise and small).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import ndimage

from ..preprocessing import ModelSpaceImage
from .window import sliding_window

#: Margin (mm) added on every side of the coarse structure's box: the coarse pass misses thin parts
#: (pulmonary vein ostia, the atrial roof) by a few mm at most; 25 mm keeps them inside with room.
MARGIN_MM = 25.0
#: The least margin (mm): where shrinking it towards this saves the fine pass a row of windows along
#: an axis, it is shrunk (on a real LA case padded into a 576x576x88 field: 18 -> 12 windows).
MIN_MARGIN_MM = 15.0
#: Localize only where the model grid holds at least this many windows' worth of voxels (the
#: LA2018 training crops hold 2-3 of the LA model's: they are segmented whole, as before).
MIN_WINDOWS = 4.0
#: A second component with more than this share of the first one's probability mass: ambiguous.
AMBIGUOUS_SHARE = 0.5
#: A crop holding more than this share of the volume's voxels gains too little: whole volume.
MAX_CROP_SHARE = 0.5


@dataclass(frozen=True)
class Localization:
    """What localization decided. box: the input-grid crop (one slice per axis) or None (whole
    volume); reason: why (one line); coarse_s: seconds of the coarse pass; found_ml: volume of
    the coarse structure (mL); second_share: the runner-up component's mass / the chosen one's."""

    box: tuple[slice, slice, slice] | None
    reason: str
    coarse_s: float = 0.0
    found_ml: float | None = None
    second_share: float | None = None

    def report(self) -> dict:
        d = asdict(self)
        d["box"] = None if self.box is None else [[b.start, b.stop] for b in self.box]
        return d


def worth_localizing(model_shape: tuple[int, ...], patch: tuple[int, ...]) -> bool:
    """True when the model grid holds at least ``MIN_WINDOWS`` windows' worth of voxels."""
    return float(np.prod(model_shape)) >= MIN_WINDOWS * float(np.prod(patch))


@torch.inference_mode()
def coarse_foreground(
    model: torch.nn.Module, image: np.ndarray, patch: tuple[int, int, int], window_batch: int, device: torch.device
) -> np.ndarray:
    """Foreground probability (X, Y, Z) float32 of one deterministic pass, non-overlapping windows."""

    def run(x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = model.encode(x)
        out = model.decode(feats, seg_only=True)
        p = torch.softmax(out["seg"].float(), dim=1)
        return {"fg": 1.0 - p[:, 0]}

    was_training = model.training
    model.eval()
    try:
        return sliding_window(run, image, patch, 0.0, window_batch, device)["fg"]
    finally:
        model.train(was_training)


def find_structure(
    fg: np.ndarray, model_spacing: np.ndarray
) -> tuple[tuple[slice, slice, slice] | None, str, float | None, float | None]:
    """(model-grid box of the chosen component or None, reason, its volume mL, runner-up share)."""
    comps, n = ndimage.label(fg > 0.5, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return None, "the coarse pass found no structure", None, None
    mass = ndimage.sum_labels(fg, comps, index=np.arange(1, n + 1))
    order = np.argsort(mass)[::-1]
    best = int(order[0]) + 1
    second = float(mass[order[1]] / mass[order[0]]) if n > 1 else 0.0
    ml = float((comps == best).sum() * np.prod(model_spacing) / 1000.0)
    if second > AMBIGUOUS_SHARE:
        return None, f"ambiguous: a second structure with {second:.0%} of the first one's mass", ml, second
    box = ndimage.find_objects((comps == best).astype(np.int32))[0]
    return box, "localized", ml, second


def margins_for_windows(
    msi: ModelSpaceImage, box: tuple[slice, ...], patch: tuple[int, ...], overlap: float | tuple[float, ...]
) -> np.ndarray:
    """Per model axis, the margin (mm) in [MIN_MARGIN_MM, MARGIN_MM] to grow the model-grid ``box``
    by: the largest (0.25 mm steps) whose crop the fine pass covers with as few windows (of ``patch``,
    ``overlap`` as in ``window.window_grid``) as the least margin's crop. The crop's size on the fine
    pass's model grid is the one ``preprocessing.resample_image`` gives the input crop
    (``model_box_to_input``, clipped): round(canonical voxels / step). -> (3,) mm"""
    overlaps = list(overlap) if isinstance(overlap, (list, tuple)) else [overlap] * 3
    step = np.asarray(msi.model_spacing, float) / np.asarray(msi.canonical_spacing, float)
    perm = msi.reorientation.perm
    candidates = np.arange(MARGIN_MM, MIN_MARGIN_MM - 1e-9, -0.25)
    out = []
    for a, (p, o) in enumerate(zip(patch, overlaps)):
        stride = max(1, int(round(p * (1.0 - float(o)))))

        def n_windows(margin_mm: float) -> int:
            crop = model_box_to_input(msi, box, margin_mm)[perm[a]]
            size = max(1, int(round((crop.stop - crop.start) / step[a])))
            return 1 if size <= p else math.ceil((size - p) / stride) + 1

        least = n_windows(MIN_MARGIN_MM)
        out.append(next(float(m) for m in candidates if n_windows(m) <= least))
    return np.asarray(out)


def model_box_to_input(
    msi: ModelSpaceImage, box: tuple[slice, ...], margin_mm: float | np.ndarray = MARGIN_MM
) -> tuple[slice, slice, slice]:
    """A model-grid box -> the input-grid box holding it, grown by ``margin_mm`` (one value or one
    per model axis) and clipped.

    Model index j lies at canonical index j * step (step = model / canonical spacing,
    ``ModelSpaceImage.to_input_grid``) and covers half a step on either side; canonical axis a is
    input axis ``perm[a]``, reversed where ``flip[a]``. Rounded outwards, so the input box always
    holds what the model box covers."""
    step = np.asarray(msi.model_spacing, float) / np.asarray(msi.canonical_spacing, float)
    margin = margin_mm / np.asarray(msi.canonical_spacing, float)
    reo = msi.reorientation
    out: list[slice | None] = [None, None, None]
    for a, b in enumerate(box):
        n = msi.canonical_shape[a]
        half = step[a] / 2  # a model voxel covers half a step on either side of its centre
        lo = max(0, int(np.floor(b.start * step[a] - half - margin[a])))
        hi = min(n, int(np.ceil((b.stop - 1) * step[a] + half + margin[a])) + 1)
        if reo.flip[a]:
            lo, hi = n - hi, n - lo
        out[reo.perm[a]] = slice(lo, hi)
    return tuple(out)  # type: ignore[return-value]


def touches_inner_face(labels: np.ndarray, box: tuple[slice, ...], full_shape: tuple[int, ...]) -> bool:
    """True when a structure (labels > 0, the crop's labels) touches a face of ``box`` that is not
    a face of the whole volume: the structure may go on beyond the crop."""
    fg = labels > 0
    for axis, (b, n) in enumerate(zip(box, full_shape)):
        first = np.take(fg, 0, axis=axis)
        last = np.take(fg, fg.shape[axis] - 1, axis=axis)
        if (b.start > 0 and first.any()) or (b.stop < n and last.any()):
            return True
    return False


def localize(
    model: torch.nn.Module,
    msi: ModelSpaceImage,
    patch: tuple[int, int, int],
    window_batch: int,
    device: torch.device,
    input_shape: tuple[int, int, int],
    overlap: float | tuple[float, float, float] = 0.5,
) -> Localization:
    """The coarse pass and the crop decision (module docstring) for a model-space image; overlap:
    the fine pass's (it sets the margins)."""
    t0 = time.perf_counter()
    fg = coarse_foreground(model, msi.array, patch, window_batch, device)
    model_box, reason, ml, second = find_structure(fg, msi.model_spacing)
    seconds = time.perf_counter() - t0
    if model_box is None:
        return Localization(None, reason + ": whole volume segmented", seconds, ml, second)
    box = model_box_to_input(msi, model_box, margins_for_windows(msi, model_box, patch, overlap))
    share = float(np.prod([b.stop - b.start for b in box]) / np.prod(input_shape))
    if share > MAX_CROP_SHARE:
        return Localization(
            None, f"the crop would hold {share:.0%} of the volume: whole volume segmented", seconds, ml, second
        )
    return Localization(box, f"localized: crop of {share:.1%} of the volume", seconds, ml, second)
