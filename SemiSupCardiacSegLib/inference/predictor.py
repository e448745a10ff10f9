"""The full segment path: a Volume on any grid -> a Prediction on the same grid.

Preprocess (``preprocessing.to_model_space``), run the network (``model_space.predict_model_space``:
sliding window, MC dropout, TTA) after the memory and workload checks, map every output back onto
the input grid, normalise the probabilities and take the labels (``postprocess.labels_from_probs``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np
import torch

from ..errors import InputError
from ..model_meta import ModelMeta
from ..networks.fold import fold_batchnorm
from ..preprocessing import to_model_space
from ..volume import Volume
from .localize import Localization, localize, touches_inner_face, worth_localizing
from .model_space import ModelSpaceOutput, check_mc_scope, predict_model_space
from .postprocess import labels_from_probs
from .settings import InferenceSettings, resolve_device
from .workload import check_memory, check_workload, plan_workload, run_with_oom_fallback, time_one_window

#: A cine model refuses inputs with more slices than this along k (ACDC stacks hold 6-21): such an
#: input is a 3D volume, not a short-axis stack.
MAX_CINE_SLICES = 40


@dataclass(frozen=True)
class Timings:
    """Seconds spent: preprocessing, the network, mapping back + labels, and all of it."""

    preprocess_s: float
    network_s: float
    postprocess_s: float
    total_s: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Prediction:
    """Results on the *input* grid (I, J, K), every map a Volume with the input's geometry.

    labels uint8 (I, J, K); probabilities float32 (K, I, J, K); sdm float32 (K-1, I, J, K) in
    [-1, 1] (negative inside) or None; entropy (H(p_bar)) / mutual_info float32 (I, J, K) in nats.
    settings: what produced them; device: where the network ran (after any out-of-memory
    fallback); timings: seconds; roi_box: the input box segmented (``uncrop``) or None;
    localization: what the coarse localization decided (``localize``), None where it did not run.
    """

    labels: Volume
    probabilities: Volume
    sdm: Volume | None
    entropy: Volume
    mutual_info: Volume
    settings: InferenceSettings
    device: str
    timings: Timings
    roi_box: tuple[slice, ...] | None = None
    localization: Localization | None = None

    def uncrop(self, full: Volume, box: tuple[slice, slice, slice], inside: np.ndarray | None = None) -> "Prediction":
        """This prediction (made on ``full.crop(box)``) on the whole grid of ``full``: outside the box
        (and, within it, where ``inside`` (box-shaped bool) is False) labels 0, probability 1 for
        background, SDM +1 (outside every structure), uncertainty 0."""

        box = tuple(box)
        cut = None if inside is None else ~inside

        def grow(a: np.ndarray, fills: tuple[float, ...]) -> np.ndarray:
            """a (..., box shape) -> (..., full shape): ``fills[c]`` outside (channel c of a
            multi-channel map; one fill for every channel otherwise). Only the box is masked: a
            full-grid boolean mask costs seconds on a 576x576x88 field."""
            out = np.empty(a.shape[:-3] + full.shape, dtype=a.dtype)
            if a.ndim == 3 or len(fills) == 1:
                out[...] = fills[0]
            else:
                for c in range(a.shape[0]):
                    out[c] = fills[min(c, len(fills) - 1)]
            inner = out[(Ellipsis,) + box]
            inner[...] = a
            if cut is not None:
                if a.ndim == 3:
                    inner[cut] = fills[0]
                else:
                    for c in range(a.shape[0]):
                        inner[c][cut] = fills[min(c, len(fills) - 1)]
            return out

        probs = grow(self.probabilities.array, (1.0, 0.0))
        maps = [
            full.with_array(grow(v.array, (fill,)))
            for v, fill in ((self.labels, 0), (self.entropy, 0.0), (self.mutual_info, 0.0))
        ]
        sdm = None if self.sdm is None else full.with_array(grow(self.sdm.array, (1.0,)))
        labels, ent, mi = maps
        return replace(
            self,
            labels=labels,
            probabilities=full.with_array(probs),
            sdm=sdm,
            entropy=ent,
            mutual_info=mi,
            roi_box=tuple(box),
        )

    def foreground_probability(self) -> Volume:
        """(I, J, K) float32 probability of any structure (1 - background)."""
        p = self.probabilities.array
        return self.labels.with_array((p[1] if p.shape[0] == 2 else 1.0 - p[0]).astype(np.float32))

    def foreground_sdm(self) -> Volume | None:
        """(I, J, K) float32 SDM of the union of structures: the per-class minimum (None without SDM head).

        The minimum of per-class normalized SDMs is negative exactly inside some structure; its
        magnitude is in each class's own normalization, so it is a display map, not a distance in mm.
        """
        if self.sdm is None:
            return None
        s = self.sdm.array
        return self.labels.with_array((s[0] if s.shape[0] == 1 else s.min(axis=0)).astype(np.float32))


class Predictor:
    """A model, its checkpoint metadata (preprocessing, classes) and inference settings, applied to
    volumes: ``Predictor(model, meta, settings).predict(volume)``. The network runs with its batch
    norm folded into the convolutions (``networks.fold``; equal outputs up to float rounding)."""

    def __init__(self, model: torch.nn.Module, meta: ModelMeta, settings: InferenceSettings):
        check_mc_scope(model, settings.mc_scope)
        # batch norm folded into the convolutions (``networks.fold``): a copy, the caller's model is untouched
        self.model = fold_batchnorm(model)
        self.meta = meta
        self.settings = settings

    def predict(self, volume: Volume, progress: Callable[[float], None] | None = None) -> Prediction:
        """Volume on any grid -> Prediction on the same grid (preprocess, sliding window + MC + TTA, map back).

        Refuses (InputError) a stack too deep for a cine model, a volume whose inference would not
        fit in memory, and a model grid far larger than the input unless ``settings.allow_large``.
        The MC-dropout masks are drawn from torch's RNG seeded with ``settings.seed`` inside a forked
        RNG state (the caller's RNG is untouched), so the same input and model give the same output.
        A 3D model on a large field of view runs on a crop around the structure a coarse pass finds
        (``settings.localize``, ``localize``): ``Prediction.localization`` says what was decided.
        """
        settings, prep, k = self.settings, self.meta.preprocessing, self.meta.num_classes
        dev = resolve_device(settings.device)
        model = self.model.to(dev)
        if prep.in_plane_shape is not None and volume.shape[2] > MAX_CINE_SLICES:
            raise InputError(
                f"this is a 2D cine model for short-axis stacks (at most {MAX_CINE_SLICES} slices along k), "
                f"but the input has {volume.shape[2]} slices: a 3D volume needs a 3D model (e.g. 'la')"
            )
        t0 = time.perf_counter()
        model_spacing = prep.model_spacing(volume.shape, volume.spacing)  # axis order aside: only the count matters
        check_memory(
            volume.shape, tuple(round(n * s / m) for n, s, m in zip(volume.shape, volume.spacing, model_spacing)), k
        )
        work = plan_workload(
            volume, prep, settings.patch_size, settings.overlap, settings.mc_samples, len(settings.tta_transforms())
        )
        check_workload(work, settings.allow_large, lambda: time_one_window(model, settings.patch_size, dev))
        msi = to_model_space(volume, prep)
        loc = None
        if settings.localize and prep.in_plane_shape is None and worth_localizing(msi.array.shape, settings.patch_size):
            pre_s = time.perf_counter() - t0

            def coarse(batch: int, device: torch.device) -> Localization:
                return localize(
                    model.to(device), msi, settings.patch_size, batch, device, volume.shape, settings.overlap
                )

            # the coarse pass has the full pass's out-of-memory fallback; the crop runs where it ran
            loc, dev = run_with_oom_fallback(coarse, settings.window_batch, dev)
            if loc.box is not None:
                pred = self._predict_crop(volume, loc, t0, pre_s, progress, dev)
                if pred is not None:
                    return pred
                loc = replace(loc, box=None, reason="the structure touched the crop's border: whole volume segmented")
        t1 = time.perf_counter()

        def run(batch: int, device: torch.device) -> ModelSpaceOutput:
            devices = [device.index or 0] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices, enabled=settings.seed is not None):
                if settings.seed is not None:
                    torch.manual_seed(settings.seed)
                attempt = replace(settings, window_batch=batch, device=str(device))
                return predict_model_space(model.to(device), msi.array, attempt, progress)

        out, dev = run_with_oom_fallback(run, settings.window_batch, dev)
        t2 = time.perf_counter()
        probs = np.clip(msi.to_input_grid(out.probs), 0.0, 1.0)
        probs /= np.maximum(probs.sum(0, keepdims=True), 1e-6)
        labels = labels_from_probs(probs, k, settings.postprocess)
        sdm = np.clip(msi.to_input_grid(out.sdm), -1.0, 1.0).astype(np.float32) if out.sdm is not None else None
        ent = np.maximum(msi.to_input_grid(out.entropy), 0.0)
        mi = np.maximum(msi.to_input_grid(out.mutual_info), 0.0)
        t3 = time.perf_counter()
        return Prediction(
            labels=volume.with_array(labels),
            probabilities=volume.with_array(probs.astype(np.float32)),
            sdm=None if sdm is None else volume.with_array(sdm),
            entropy=volume.with_array(ent.astype(np.float32)),
            mutual_info=volume.with_array(mi.astype(np.float32)),
            settings=settings,
            device=str(dev),
            timings=Timings(t1 - t0, t2 - t1, t3 - t2, t3 - t0),
            localization=loc,
        )

    def _predict_crop(
        self,
        volume: Volume,
        loc: Localization,
        t0: float,
        pre_s: float,
        progress: Callable[[float], None] | None,
        device: torch.device,
    ) -> Prediction | None:
        """The full pass on ``loc.box`` of ``volume`` on ``device``, mapped back onto the whole grid;
        None when the structure touches a crop face inside the volume (it may go on beyond the crop).
        t0: when ``predict`` started; pre_s: its seconds of preprocessing the whole volume."""
        crop = Predictor(self.model, self.meta, replace(self.settings, localize=False, device=str(device)))
        sub = crop.predict(volume.crop(loc.box), progress)
        if touches_inner_face(sub.labels.array, loc.box, volume.shape):
            return None
        full = sub.uncrop(volume, loc.box)
        t, total = sub.timings, time.perf_counter() - t0
        network = loc.coarse_s + t.network_s
        pre = pre_s + t.preprocess_s
        return replace(
            full,
            roi_box=None,
            settings=self.settings,
            localization=loc,
            timings=Timings(pre, network, total - pre - network, total),
        )
