"""A model checkpoint's metadata as one validated, versioned object: ``ModelMeta``.

On disk a checkpoint stays a plain dict (``checkpoint.py``); ``ModelMeta.from_dict`` reads and checks
it once on load (every required key present, no unknown key, values usable for inference) and
``to_dict`` writes it back, so a dict payload round-trips (the weights travel beside it).

Versions (``meta_version``): 0 = a file without the field (every checkpoint written before it,
e.g. the shipped models); 1 = the same keys plus ``meta_version``. A version newer than this code
knows is refused, naming the file.

TTA rule (``InferenceDefaults``): ``tta_rot90`` runs the 8 symmetries of the square in the (0, 1)
plane (rotations by k x 90 degrees, with and without a flip of axis 0). That group holds every
flip of axes 0 and 1, so with ``tta_rot90`` the flips of ``tta_flip_axes`` are among its passes
(rot90 supersedes flips, nothing is lost); a flip of axis 2 is not in it and is refused rather
than ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .config_check import check_patch
from .errors import InputError
from .networks import ARCHITECTURES
from .preprocessing import Preprocessing

#: The metadata version ``to_dict`` writes.
META_VERSION = 1
#: Keys every model checkpoint holds (besides ``state_dict``).
REQUIRED_KEYS = ("arch", "network", "preprocessing", "patch_size", "labels")
#: Keys a checkpoint may hold besides the required ones (``format`` and ``state_dict`` are the
#: file's, not metadata; resume-only training state is stripped before, ``checkpoint.RESUME_ONLY_KEYS``).
OPTIONAL_KEYS = (
    "kind",
    "meta_version",
    "method",
    "method_params",
    "iteration",
    "training_data",
    "validation",
    "model_id",
    "created",
    "inference",
    "quality",
    "swa",
    "inference_choice",
    "fine_tune",
    "averaged_with_init",
    "adapted_batch_norm",
)
#: MC-dropout scopes (``inference.settings``): which dropout layers are sampled.
MC_SCOPES = ("decoder", "head")
#: The axes of the plane whose 8 symmetries ``tta_rot90`` runs.
ROT90_PLANE = (0, 1)


def check_tta(flip_axes, rot90: bool, where: str) -> tuple[int, ...]:
    """The flip axes as a sorted tuple of distinct axes in 0..2; InputError naming ``where`` for another
    axis, or for a flip of an axis outside ``ROT90_PLANE`` together with rot90 (it would be ignored)."""
    try:
        axes = tuple(sorted({int(a) for a in flip_axes}))
    except (TypeError, ValueError):
        raise InputError(f"{where}: tta_flip_axes must be a list of axes 0, 1, 2, got {flip_axes!r}") from None
    if any(a not in (0, 1, 2) for a in axes):
        raise InputError(f"{where}: tta_flip_axes must be axes 0, 1 or 2, got {list(flip_axes)}")
    if rot90 and not set(axes) <= set(ROT90_PLANE):
        raise InputError(
            f"{where}: tta_rot90 runs the 8 symmetries of the (0, 1) plane, which flip axes 0 and 1 only; "
            f"tta_flip_axes {list(axes)} would be ignored: drop axis 2 or tta_rot90"
        )
    return axes


@dataclass(frozen=True)
class InferenceDefaults:
    """What a checkpoint fixes about inference (its ``inference`` object): flip TTA axes (model
    space), the 8-fold in-plane rotation TTA (supersedes the flips, see the module docstring) and
    the MC-dropout scope; ``deterministic_mask``: the mask and SDM from dropout-off passes, the MC
    samples giving only the uncertainty (``inference.model_space.predict_model_space``)."""

    tta_flip_axes: tuple[int, ...] = ()
    tta_rot90: bool = False
    mc_scope: str = "decoder"
    deterministic_mask: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.tta_rot90, bool):
            raise InputError(f"inference.tta_rot90 must be true or false, got {self.tta_rot90!r}")
        if not isinstance(self.deterministic_mask, bool):
            raise InputError(f"inference.deterministic_mask must be true or false, got {self.deterministic_mask!r}")
        if self.mc_scope not in MC_SCOPES:
            raise InputError(f"inference.mc_scope must be one of {MC_SCOPES}, got {self.mc_scope!r}")
        object.__setattr__(self, "tta_flip_axes", check_tta(self.tta_flip_axes, self.tta_rot90, "inference"))

    @classmethod
    def from_dict(cls, d: dict | None, where: str) -> "InferenceDefaults":
        d = dict(d or {})
        unknown = sorted(set(d) - {"tta_flip_axes", "tta_rot90", "mc_scope", "deterministic_mask"})
        if unknown:
            raise InputError(f"{where}: unknown key 'inference.{unknown[0]}' in the checkpoint's metadata")
        try:
            return cls(
                d.get("tta_flip_axes", ()),
                d.get("tta_rot90", False),
                d.get("mc_scope", "decoder"),
                d.get("deterministic_mask", False),
            )
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"tta_flip_axes": list(self.tta_flip_axes)}
        if self.tta_rot90:
            d["tta_rot90"] = True
        if self.mc_scope != "decoder":
            d["mc_scope"] = self.mc_scope
        if self.deterministic_mask:
            d["deterministic_mask"] = True
        return d


@dataclass(frozen=True)
class QualityRule:
    """The quality flag a checkpoint carries (``reporting.quality_flag``): a structure is doubtful when
    its ``score`` (a report field) exceeds ``threshold``; assessed only with at least
    ``min_mc_samples`` MC samples of ``mc_scope``. ``source``: how the threshold was chosen."""

    score: str
    threshold: float
    min_mc_samples: int = 2
    mc_scope: str = "decoder"
    source: str | None = None

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "QualityRule":
        if not isinstance(d, dict) or "score" not in d or "threshold" not in d:
            raise InputError(f"{where}: 'quality' must be an object with a score and a threshold, got {d!r}")
        unknown = sorted(set(d) - {"score", "threshold", "min_mc_samples", "mc_scope", "source"})
        if unknown:
            raise InputError(f"{where}: unknown key 'quality.{unknown[0]}' in the checkpoint's metadata")
        try:
            rule = cls(
                str(d["score"]),
                float(d["threshold"]),
                int(d.get("min_mc_samples", 2)),
                str(d.get("mc_scope", "decoder")),
                None if d.get("source") is None else str(d["source"]),
            )
        except (TypeError, ValueError):
            raise InputError(f"{where}: 'quality' holds a value of the wrong type: {d!r}") from None
        if not math.isfinite(rule.threshold) or rule.mc_scope not in MC_SCOPES:
            raise InputError(f"{where}: 'quality' needs a finite threshold and an MC scope in {MC_SCOPES}: {d!r}")
        return rule

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "score": self.score,
            "threshold": self.threshold,
            "min_mc_samples": self.min_mc_samples,
            "mc_scope": self.mc_scope,
        }
        if self.source is not None:
            d["source"] = self.source
        return d


@dataclass(frozen=True)
class ModelMeta:
    """Everything a model checkpoint says besides its weights.

    arch, network: the architecture and its parameters (``networks.build_network``).
    preprocessing: how images reach model space. patch_size: window (X, Y, Z) voxels.
    labels: label value (1..K-1) -> structure name. inference: TTA and MC defaults. quality: the
    quality flag or None. The rest is provenance: method and its parameters, training data and
    validation summaries, model id, creation time, SWA, fine-tuning method, the inference choice.
    path: the file it was read from (not stored in it).
    """

    arch: str
    network: dict
    preprocessing: Preprocessing
    patch_size: tuple[int, int, int]
    labels: dict[int, str]
    kind: str = "model"
    meta_version: int = META_VERSION
    method: str | None = None
    method_params: dict = field(default_factory=dict)
    iteration: int | None = None
    training_data: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    model_id: str | None = None
    created: str | None = None
    inference: InferenceDefaults = InferenceDefaults()
    quality: QualityRule | None = None
    swa: dict | None = None
    inference_choice: str | None = None
    fine_tune: dict | None = None
    averaged_with_init: dict | None = None
    adapted_batch_norm: dict | None = None
    path: str | None = field(default=None, compare=False)

    @property
    def num_classes(self) -> int:
        """K: background plus the foreground classes."""
        return int(self.network.get("num_classes", 2))

    @classmethod
    def from_dict(cls, d: dict, name: str = "checkpoint", path: str | None = None) -> "ModelMeta":
        """Validate checkpoint metadata ``d`` (``state_dict`` and ``format`` are ignored); InputError
        naming ``name`` (the file) and the key for anything that cannot drive inference."""
        d = {k: v for k, v in d.items() if k not in ("format", "state_dict")}
        for key in REQUIRED_KEYS:
            if key not in d:
                raise InputError(
                    f"{name}: checkpoint has no '{key}' (a required metadata key); re-export it with "
                    "Training/export_model.py from its training run"
                )
        unknown = sorted(set(d) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
        if unknown:
            raise InputError(f"{name}: unknown metadata key '{unknown[0]}' in the checkpoint")
        version = d.get("meta_version", 0)
        if not isinstance(version, int) or not 0 <= version <= META_VERSION:
            raise InputError(
                f"{name}: metadata version {version!r} is not one this version reads (0..{META_VERSION}); "
                "update SemiSupCardiacSeg"
            )
        kind = d.get("kind", "model")
        if kind not in ("model", "resume"):
            raise InputError(f"{name}: unknown checkpoint kind {kind!r}")
        arch, net = d["arch"], d["network"]
        if arch not in ARCHITECTURES:
            raise InputError(f"{name}: unknown architecture {arch!r} (known: {', '.join(sorted(ARCHITECTURES))})")
        if not isinstance(net, dict) or not isinstance(net.get("num_classes", 2), int):
            raise InputError(f"{name}: 'network' must be an object with an integer num_classes, got {net!r}")
        prep = _preprocessing(d["preprocessing"], name)
        try:
            check_patch(
                list(d["patch_size"]) if isinstance(d["patch_size"], (list, tuple)) else d["patch_size"],
                arch,
                "its 'patch_size'",
            )
        except InputError as exc:
            raise InputError(f"{name}: {exc}") from None
        labels = d["labels"]
        k = int(net.get("num_classes", 2))
        if not isinstance(labels, dict) or not labels or not all(str(v).isdigit() and 1 <= int(v) < k for v in labels):
            raise InputError(f"{name}: 'labels' must map label values 1..{k - 1} to names, got {labels!r}")
        quality = d.get("quality")
        return cls(
            arch=arch,
            network=dict(net),
            preprocessing=prep,
            patch_size=tuple(int(p) for p in d["patch_size"]),
            labels={int(v): str(labels[v]) for v in sorted(labels, key=int)},
            kind=kind,
            meta_version=version,
            method=d.get("method"),
            method_params=dict(d.get("method_params") or {}),
            iteration=d.get("iteration"),
            training_data=dict(d.get("training_data") or {}),
            validation=dict(d.get("validation") or {}),
            model_id=d.get("model_id"),
            created=d.get("created"),
            inference=InferenceDefaults.from_dict(d.get("inference"), name),
            quality=None if not quality else QualityRule.from_dict(quality, name),
            swa=d.get("swa"),
            inference_choice=d.get("inference_choice"),
            fine_tune=d.get("fine_tune"),
            averaged_with_init=d.get("averaged_with_init"),
            adapted_batch_norm=d.get("adapted_batch_norm"),
            path=path,
        )

    def to_dict(self) -> dict:
        """The checkpoint's metadata dict (version ``META_VERSION``; optional keys only when set)."""
        d = {
            "kind": self.kind,
            "meta_version": META_VERSION,
            "arch": self.arch,
            "network": dict(self.network),
            "preprocessing": self.preprocessing.to_dict(),
            "patch_size": list(self.patch_size),
            "labels": self.label_names(),
            "method": self.method,
            "method_params": dict(self.method_params),
            "iteration": self.iteration,
            "training_data": dict(self.training_data),
            "validation": dict(self.validation),
            "model_id": self.model_id,
            "created": self.created,
            "inference": self.inference.to_dict(),
        }
        optional = {
            "quality": None if self.quality is None else self.quality.to_dict(),
            "swa": self.swa,
            "inference_choice": self.inference_choice,
            "fine_tune": self.fine_tune,
            "averaged_with_init": self.averaged_with_init,
            "adapted_batch_norm": self.adapted_batch_norm,
        }
        d.update({k: v for k, v in optional.items() if v is not None})
        return d

    def label_names(self) -> dict[str, str]:
        """The labels as stored (and as training configs hold them): {"1": name, ...}."""
        return {str(v): n for v, n in self.labels.items()}


def _preprocessing(prep, name: str) -> Preprocessing:
    """The checkpoint's preprocessing object, checked: spacing three finite numbers > 0, a known
    normalization, an in-plane shape of at least 4 voxels."""
    if not isinstance(prep, dict):
        raise InputError(f"{name}: 'preprocessing' must be an object, got {prep!r}")
    try:
        p = Preprocessing.from_dict(prep)
    except (TypeError, ValueError, IndexError) as exc:
        raise InputError(f"{name}: 'preprocessing' is not valid ({exc})") from None
    sp = [float(v) for v in p.spacing]
    if len(sp) != 3 or not all(v > 0 and math.isfinite(v) for v in sp):
        raise InputError(f"{name}: 'preprocessing.spacing' must be three numbers > 0, got {prep.get('spacing')!r}")
    if p.normalization not in ("zscore", "none"):
        raise InputError(f"{name}: 'preprocessing.normalization' {p.normalization!r} is not zscore or none")
    if p.in_plane_shape is not None and min(p.in_plane_shape) < 4:
        raise InputError(f"{name}: 'preprocessing.in_plane_shape' {list(p.in_plane_shape)} is too small")
    return p
