"""Inference: settings, the sliding window, MC-dropout/TTA uncertainty, the segment path.

    settings = InferenceSettings.from_meta(meta, mc_samples=10, device="cpu")
    pred = Predictor(model, meta, settings).predict(volume)   # every map a Volume on volume's grid

Modules: ``settings`` (InferenceSettings, devices), ``window`` (generic sliding window),
``uncertainty`` (the accumulator: mean p, E[H], mean SDM -> H(p_bar), MI), ``model_space``
(a network with MC dropout and TTA over a model-space image), ``postprocess`` (labels from
probabilities), ``workload`` (memory/time checks, out-of-memory fallback), ``predictor``
(Predictor, Prediction).
"""

from __future__ import annotations

from ..memory import available_memory_bytes, cgroup_available_bytes, host_available_bytes
from ..networks import set_mc_dropout
from .model_space import ModelSpaceOutput, check_mc_scope, mc_window_fn, predict_model_space
from .postprocess import keep_largest_per_class, labels_from_probs, largest_component
from .predictor import MAX_CINE_SLICES, Prediction, Predictor, Timings
from .settings import MAX_MC_SAMPLES, InferenceSettings, flip_sets, resolve_device
from .uncertainty import UncertaintyAccumulator, entropy, predictive_uncertainty
from .window import gaussian_importance, sliding_window, window_grid, window_starts
from .workload import (
    LARGE_GRID_FACTOR,
    LARGE_GRID_WINDOWS,
    Workload,
    check_memory,
    check_workload,
    estimate_inference_bytes,
    estimated_seconds,
    plan_workload,
    run_with_oom_fallback,
    time_one_window,
)

__all__ = [
    "LARGE_GRID_FACTOR",
    "LARGE_GRID_WINDOWS",
    "MAX_CINE_SLICES",
    "MAX_MC_SAMPLES",
    "InferenceSettings",
    "ModelSpaceOutput",
    "Prediction",
    "Predictor",
    "Timings",
    "UncertaintyAccumulator",
    "Workload",
    "available_memory_bytes",
    "cgroup_available_bytes",
    "check_mc_scope",
    "check_memory",
    "check_workload",
    "entropy",
    "estimate_inference_bytes",
    "estimated_seconds",
    "flip_sets",
    "gaussian_importance",
    "host_available_bytes",
    "keep_largest_per_class",
    "labels_from_probs",
    "largest_component",
    "mc_window_fn",
    "plan_workload",
    "predict_model_space",
    "predictive_uncertainty",
    "resolve_device",
    "run_with_oom_fallback",
    "set_mc_dropout",
    "sliding_window",
    "time_one_window",
    "window_grid",
    "window_starts",
]
