"""Every training setting checked before any work: ``validate_config`` refuses a config whose
values cannot give a meaningful training (an unknown method, key or optimizer, 0 iterations,
a patch the network cannot downsample, ...), with one ``InputError`` naming the key, the value and
what is allowed - before any case is read. Also the architecture checks shared by ``--init``,
``--resume`` and checkpoints (``downsampling_factor``, ``architecture_differences``).

Schema: the top-level keys are those of ``training.DEFAULTS`` plus ``OPTIONAL_KEYS``; keys
starting with ``_`` (``_sources``, ``_comment``) are documentation and ignored. ``network`` keys
are the fields of the architecture's config class, ``method_params`` keys those of the method's
``defaults`` (a key of another method's only is ignored with an ``InputWarning``: a config
written for one method may be run with ``--method`` another).
"""

from __future__ import annotations

import math
from dataclasses import fields

from .errors import InputError, warn

#: Top-level keys allowed besides those of ``training.DEFAULTS``.
OPTIONAL_KEYS = {
    "data",
    "pseudo_labels",
    "inference_patch_size",
    "method_params",
    "swa",
    "init",
    "average_with_init",
    "intensity_augmentation",
    "intensity_fold",
    "background_field",
    "copy_paste",
}
#: The largest network/config values accepted as sane (anything larger is a typo, not a setting).
MAX_ITERATIONS = 10_000_000
MAX_BATCH = 4096
OPTIMIZERS = ("sgd", "adam", "rmsprop")
SCHEDULES = ("step", "poly", "exp", "constant")
SEG_LOSSES = ("dice", "dice_ce", "ce")
#: Training arithmetic (``training.precision``): "auto" resolves to one of the other two.
TRAINING_PRECISIONS = ("auto", "float32", "bfloat16")


def downsampling_factor(arch: str) -> tuple[int, int, int]:
    """Per-axis factor a patch must be divisible by: the V-Nets halve every axis four times
    (stride-2 convolutions, ``networks/vnet.py``): 16; the 2D U-Net max-pools in-plane four times
    (``networks/unet2d.py``): 16 in-plane, 1 along the slice axis."""
    return (16, 16, 1) if arch == "unet2d" else (16, 16, 16)


def check_patch(patch, arch: str, where: str) -> None:
    """A patch of 3 positive integers divisible by the architecture's downsampling factor."""
    if not isinstance(patch, (list, tuple)) or len(patch) != 3 or not all(_is_int(p) and p >= 1 for p in patch):
        raise InputError(f"{where} must be three positive integers, got {patch!r}")
    factor = downsampling_factor(arch)
    bad = [f"{p} (axis {a})" for a, (p, f) in enumerate(zip(patch, factor)) if p % f]
    if bad:
        raise InputError(
            f"{where} {list(patch)}: {', '.join(bad)} not divisible by {list(factor)}, the {arch} "
            "network's downsampling factor per axis"
        )


def architecture_differences(arch_a: str, net_a: dict, arch_b: str, net_b: dict) -> list[str]:
    """'field: a vs b' for every architecture field that differs (defaults filled in)."""
    from .networks import ARCHITECTURES  # deferred: loads torch; config_check is torch-free

    if arch_a != arch_b:
        return [f"arch: {arch_a} vs {arch_b}"]
    cfg = ARCHITECTURES.get(arch_a, (None, None))[1]
    full_a, full_b = dict(net_a), dict(net_b)
    if cfg is not None:
        try:
            full_a, full_b = cfg(**net_a).to_dict(), cfg(**net_b).to_dict()
        except TypeError:
            pass
    return [
        f"network.{k}: {full_a.get(k)!r} vs {full_b.get(k)!r}"
        for k in sorted(set(full_a) | set(full_b))
        if full_a.get(k) != full_b.get(k)
    ]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(cfg: dict, key: str, lo: int, hi: int | None = None, where: str = "") -> None:
    v = cfg.get(key)
    name = f"{where}{key}"
    if not _is_int(v) or v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise InputError(f"config '{name}' must be an integer {rng}, got {v!r}")


def _num(
    cfg: dict, key: str, lo: float | None = None, hi: float | None = None, lo_open=False, hi_open=False, where: str = ""
) -> None:
    v = cfg.get(key)
    name = f"{where}{key}"
    ok = (
        _is_num(v)
        and (lo is None or (v > lo if lo_open else v >= lo))
        and (hi is None or (v < hi if hi_open else v <= hi))
    )
    if not ok:
        rng = ("" if lo is None else ("(" if lo_open else "[") + f"{lo:g}, ") + (
            "inf)" if hi is None else f"{hi:g}" + (")" if hi_open else "]")
        )
        raise InputError(f"config '{name}' must be a finite number{' in ' + rng if rng else ''}, got {v!r}")


def _non_finite(obj, path=""):
    if isinstance(obj, float) and not math.isfinite(obj):
        return path or "(top level)"
    if isinstance(obj, dict):
        for k, v in obj.items():
            hit = _non_finite(v, f"{path}.{k}" if path else str(k))
            if hit:
                return hit
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            hit = _non_finite(v, f"{path}[{i}]")
            if hit:
                return hit
    return None


def validate_config(cfg: dict) -> None:
    """Refuse a merged training config (``training.merge_config(DEFAULTS, ...)``) that cannot train."""
    from .methods import METHODS  # deferred: loads torch; config_check is torch-free
    from .networks import ARCHITECTURES  # deferred: loads torch; config_check is torch-free
    from .training import DEFAULTS  # deferred: import cycle (training imports config_check)

    bad = _non_finite({k: v for k, v in cfg.items() if not str(k).startswith("_")})
    if bad:
        raise InputError(f"config '{bad}' is not a finite number (NaN or Infinity)")
    unknown = sorted(k for k in cfg if not str(k).startswith("_") and k not in DEFAULTS and k not in OPTIONAL_KEYS)
    if unknown:
        raise InputError(
            f"unknown config key(s) {', '.join(repr(k) for k in unknown)}; known: "
            f"{', '.join(sorted(set(DEFAULTS) | OPTIONAL_KEYS))}"
        )
    method = cfg.get("method")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; known: {', '.join(sorted(METHODS))}")
    arch = cfg.get("arch")
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture (config 'arch') {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    net = cfg.get("network")
    if not isinstance(net, dict):
        raise InputError(f"config 'network' must be an object, got {net!r}")
    known_net = {f.name for f in fields(ARCHITECTURES[arch][1])}
    unknown = sorted(set(net) - known_net)
    if unknown:
        raise InputError(
            f"unknown config key(s) network.{', network.'.join(unknown)} for arch {arch}; "
            f"known: {', '.join(sorted(known_net))}"
        )
    _int(net, "num_classes", 2, 255, "network.")
    if "n_filters" in net:
        _int(net, "n_filters", 1, 1024, "network.")
    if "in_channels" in net:
        _int(net, "in_channels", 1, 64, "network.")
    if "dropout" in net:
        _num(net, "dropout", 0.0, 1.0, hi_open=True, where="network.")
    k = int(net["num_classes"])
    params = cfg.get("method_params") or {}
    if not isinstance(params, dict):
        raise InputError(f"config 'method_params' must be an object, got {params!r}")
    known_params = set(METHODS[method].defaults)
    any_method = set().union(*(set(m.defaults) for m in METHODS.values()))
    unknown = sorted(set(params) - any_method)
    if unknown:  # a typo: no method has it
        raise InputError(
            f"unknown method_params key(s) {', '.join(unknown)} for method {method}; "
            f"known: {', '.join(sorted(known_params)) or 'none'}"
        )
    unused = sorted(set(params) - known_params)
    if unused:  # another method's setting (a config written for it, run with --method): said, not fatal
        warn(f"method_params {', '.join(unused)} not used by method {method} (ignored)")
    if "seg_loss" in params and params["seg_loss"] not in SEG_LOSSES:
        raise InputError(f"method_params.seg_loss must be one of {', '.join(SEG_LOSSES)}, got {params['seg_loss']!r}")
    labels = cfg.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InputError(f"config 'labels' must be an object {{value: name}}, got {labels!r}")
    for key in labels:
        if not str(key).isdigit() or not 1 <= int(key) < k:
            raise InputError(
                f"config 'labels' key {key!r} must be a label value in 1..{k - 1} (network.num_classes {k})"
            )
    prep = cfg.get("preprocessing")
    if not isinstance(prep, dict):
        raise InputError(f"config 'preprocessing' must be an object, got {prep!r}")
    unknown = sorted(set(prep) - {"spacing", "normalization", "in_plane_shape", "reorient"})
    if unknown:
        raise InputError(f"unknown config key(s) preprocessing.{', preprocessing.'.join(unknown)}")
    sp = prep.get("spacing")
    if sp is not None and (not isinstance(sp, list) or len(sp) != 3 or not all(_is_num(s) and s > 0 for s in sp)):
        raise InputError(f"config 'preprocessing.spacing' must be three numbers > 0 (mm), got {sp!r}")
    shape = prep.get("in_plane_shape")
    if shape is not None and (
        not isinstance(shape, list) or len(shape) != 2 or not all(_is_int(s) and s >= 4 for s in shape)
    ):
        raise InputError(f"config 'preprocessing.in_plane_shape' must be two integers >= 4, got {shape!r}")
    if prep.get("normalization", "zscore") not in ("zscore", "none"):
        raise InputError(
            f"config 'preprocessing.normalization' must be zscore or none, got {prep.get('normalization')!r}"
        )
    check_patch(cfg.get("patch_size"), arch, "config 'patch_size'")
    if cfg.get("inference_patch_size") is not None:
        check_patch(cfg["inference_patch_size"], arch, "config 'inference_patch_size'")
    _int(cfg, "iterations", 1, MAX_ITERATIONS)
    _int(cfg, "batch_size", 1, MAX_BATCH)
    _int(cfg, "labeled_per_batch", 1, cfg["batch_size"])
    uses_unlabeled = METHODS[method].uses_unlabeled
    if uses_unlabeled and cfg["labeled_per_batch"] >= cfg["batch_size"]:
        raise InputError(
            f"method {method} learns from unlabeled images: config 'labeled_per_batch' "
            f"({cfg['labeled_per_batch']}) must be smaller than 'batch_size' ({cfg['batch_size']})"
        )
    if cfg.get("labeled") is not None:
        _int(cfg, "labeled", 1)
    _int(cfg, "seed", 0)
    _int(cfg, "num_workers", 0, 256)
    _int(cfg, "log_every", 1)
    _int(cfg, "checkpoint_every", 1)
    if cfg.get("export_dtype") not in ("float32", "float16"):
        raise InputError(f"config 'export_dtype' must be float32 or float16, got {cfg.get('export_dtype')!r}")
    if cfg.get("precision", "auto") not in TRAINING_PRECISIONS:
        raise InputError(
            f"config 'precision' must be {', '.join(TRAINING_PRECISIONS[:-1])} or {TRAINING_PRECISIONS[-1]}, "
            f"got {cfg.get('precision')!r}"
        )
    val = cfg.get("validation")
    if not isinstance(val, dict):
        raise InputError(f"config 'validation' must be an object, got {val!r}")
    unknown = sorted(set(val) - {"cases", "list", "last", "every", "overlap"})
    if unknown:
        raise InputError(f"unknown config key(s) validation.{', validation.'.join(unknown)}")
    if "last" in val:
        _int(val, "last", 0, where="validation.")
    if "every" in val:
        _int(val, "every", 0, where="validation.")
    if "overlap" in val:
        _num(val, "overlap", 0.0, 1.0, hi_open=True, where="validation.")
    optim = cfg.get("optim")
    if not isinstance(optim, dict) or "model" not in optim:
        raise InputError(f"config 'optim' must be an object with a 'model' entry, got {optim!r}")
    for name, spec in optim.items():
        where = f"optim.{name}."
        if not isinstance(spec, dict):
            raise InputError(f"config 'optim.{name}' must be an object, got {spec!r}")
        if spec.get("type") not in OPTIMIZERS:
            raise InputError(f"config '{where}type' must be one of {', '.join(OPTIMIZERS)}, got {spec.get('type')!r}")
        _num(spec, "lr", 0.0, None, lo_open=True, where=where)
        if spec.get("schedule", "constant") not in SCHEDULES:
            raise InputError(
                f"config '{where}schedule' must be one of {', '.join(SCHEDULES)}, got {spec.get('schedule')!r}"
            )
        for key in ("momentum", "gamma"):
            if key in spec:
                _num(spec, key, 0.0, None, where=where)
        if "weight_decay" in spec:
            _num(spec, "weight_decay", 0.0, None, where=where)
        if "step" in spec:
            _num(spec, "step", 0.0, None, lo_open=True, where=where)
    swa = cfg.get("swa")
    if swa:
        if not isinstance(swa, dict):
            raise InputError(f"config 'swa' must be an object, got {swa!r}")
        _int(swa, "start", 0, where="swa.")
        _int(swa, "every", 1, where="swa.")
        if "bn_batches" in swa:
            _int(swa, "bn_batches", 1, where="swa.")
    if "intensity_augmentation" in cfg and not isinstance(cfg["intensity_augmentation"], bool):
        raise InputError(
            f"config 'intensity_augmentation' must be true or false, got {cfg['intensity_augmentation']!r}"
        )
    for key in ("intensity_fold", "background_field"):
        if key in cfg:
            _num(cfg, key, 0.0, 1.0)
    if cfg.get("copy_paste") is not None:
        _check_copy_paste(cfg["copy_paste"], method, uses_unlabeled)
    if cfg.get("average_with_init") is not None:
        _num(cfg, "average_with_init", 0.0, 1.0, lo_open=True)
        if not cfg.get("init"):
            raise InputError("config 'average_with_init' needs 'init' (the weights to average with): pass --init MODEL")
        if swa:
            raise InputError("config 'average_with_init' and 'swa' cannot be combined: model.pt is one or the other")


def _check_copy_paste(cp, method: str, uses_unlabeled: bool) -> None:
    """Config ``copy_paste`` (``methods.copy_paste``): an object of known keys in range, on a method
    whose batches hold unlabeled images."""
    from .methods.copy_paste import COPY_PASTE_DEFAULTS  # deferred: loads torch

    if not isinstance(cp, dict):
        raise InputError(f"config 'copy_paste' must be an object ({{}} for the defaults), got {cp!r}")
    unknown = sorted(set(cp) - set(COPY_PASTE_DEFAULTS))
    if unknown:
        raise InputError(
            f"unknown config key(s) copy_paste.{', copy_paste.'.join(unknown)}; known: {', '.join(COPY_PASTE_DEFAULTS)}"
        )
    if not uses_unlabeled:
        raise InputError(
            f"config 'copy_paste' mixes labeled with unlabeled images, but method {method} trains on "
            "labeled images only: use a semi-supervised method"
        )
    for key in ("weight", "unlabeled_weight", "rampup"):
        if key in cp:
            _num(cp, key, 0.0, None, where="copy_paste.")
    if "ratio" in cp:
        _num(cp, "ratio", 0.0, 1.0, lo_open=True, hi_open=True, where="copy_paste.")
    if "ema_decay" in cp:
        _num(cp, "ema_decay", 0.0, 1.0, hi_open=True, where="copy_paste.")


#: Config keys that may change on ``--resume`` (they do not change what the run computes, or only
#: say how far it goes): ``iterations`` (continue a finished run further), how often it logs and
#: saves, its data-loader workers, the validation frequency, ``init`` (the weights come from
#: ``last.pt``), and documentation keys (``_sources``, ``_comment``).
RESUME_MAY_CHANGE = (
    "iterations",
    "num_workers",
    "log_every",
    "checkpoint_every",
    "validation.every",
    "init",
    "precision",  # rounding only; a change is warned about when the run continues (Trainer.fit)
)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if str(k).startswith("_"):
            continue
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def with_method_defaults(cfg: dict) -> dict:
    """``cfg`` with ``method_params`` completed by its method's ``defaults`` (the values the method
    runs with: a config file states only those it changes)."""
    from .methods import METHODS  # deferred: loads torch; config_check is torch-free

    method = METHODS.get(cfg.get("method"))
    if method is None:
        return cfg
    return {**cfg, "method_params": {**method.defaults, **(cfg.get("method_params") or {})}}


def config_differences(saved: dict, current: dict, ignore=RESUME_MAY_CHANGE) -> list[str]:
    """'key: saved -> current' for each setting that differs, outside ``ignore`` (flattened keys);
    method parameters are compared with their method's defaults filled in (a parameter left at
    its default is the same setting whether or not the config states it)."""
    a, b = _flatten(with_method_defaults(saved)), _flatten(with_method_defaults(current))
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in ignore or any(key.startswith(i + ".") for i in ignore):
            continue
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if isinstance(va, tuple):
            va = list(va)
        if isinstance(vb, tuple):
            vb = list(vb)
        if va != vb:
            diffs.append(f"{key}: {va!r} -> {vb!r}")
    return diffs
