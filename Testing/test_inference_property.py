"""Property test of the inference path: any small volume, spacing and direction -> no crash and every
output on the input's grid, finite and in range."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from SemiSupCardiacSegLib.errors import InputError
from SemiSupCardiacSegLib.inference import InferenceSettings, Predictor
from SemiSupCardiacSegLib.model_meta import ModelMeta
from SemiSupCardiacSegLib.networks import build_network
from SemiSupCardiacSegLib.preprocessing import MIN_MODEL_VOXELS, Preprocessing
from SemiSupCardiacSegLib.volume import Volume

torch.manual_seed(0)
NET = build_network("vnet", {"in_channels": 1, "num_classes": 2, "n_filters": 2, "dropout": 0.5}).eval()
PREP = Preprocessing.from_dict({"spacing": [2.0, 2.0, 2.0]})


def predict(net, vol, prep, patch, num_classes, mc_samples, flip_axes=()):
    """The segment path of ``net`` with checkpoint metadata made of ``prep``, ``patch`` and the classes."""
    meta = ModelMeta.from_dict(
        {
            "arch": "vnet" if patch[2] > 1 else "unet2d",
            "network": {"num_classes": num_classes},
            "preprocessing": prep.to_dict(),
            "patch_size": list(patch),
            "labels": {str(c): f"class {c}" for c in range(1, num_classes)},
            "inference": {"tta_flip_axes": list(flip_axes)},
        },
        "test.pt",
    )
    return Predictor(net, meta, InferenceSettings.from_meta(meta, mc_samples=mc_samples, device="cpu")).predict(vol)


volumes = st.builds(
    lambda shape, spacing, angles, seed: (shape, spacing, angles, seed),
    st.tuples(*[st.integers(3, 24)] * 3),
    st.tuples(*[st.floats(0.4, 3.5)] * 3),
    st.tuples(*[st.floats(-180, 180)] * 3),
    st.integers(0, 2**16),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(volumes, st.sampled_from([1, 2]), st.sampled_from([(), (0, 1)]))
def test_any_small_volume_gives_outputs_on_its_grid(vol_args, mc, flips):
    shape, spacing, angles, seed = vol_args
    rng = np.random.default_rng(seed)
    direction = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    vol = Volume(rng.normal(size=shape).astype(np.float32), spacing, rng.uniform(-50, 50, 3), direction)
    if np.any(np.asarray(shape) * np.asarray(spacing) < MIN_MODEL_VOXELS * 2.0):
        event("too small: refused")
        with pytest.raises(InputError, match="image is too small"):
            predict(NET, vol, PREP, (16, 16, 16), 2, mc)
        return
    event("segmented")
    pred = predict(NET, vol, PREP, (16, 16, 16), 2, mc, flips)
    for out in (pred.labels, pred.probabilities, pred.sdm, pred.entropy, pred.mutual_info):
        assert out.same_grid(vol)
    probs = pred.probabilities.array
    assert probs.shape == (2,) + shape and pred.sdm.array.shape == (1,) + shape
    assert set(np.unique(pred.labels.array)) <= {0, 1}
    assert np.isfinite(probs).all() and np.allclose(probs.sum(0), 1, atol=1e-4)
    assert pred.entropy.array.min() >= 0 and pred.entropy.array.max() <= math.log(2) + 1e-5
    assert np.abs(pred.sdm.array).max() <= 1


NET_2D = build_network("unet2d", {"in_channels": 1, "num_classes": 4, "n_filters": 2}).eval()
PREP_2D = Preprocessing.from_dict({"in_plane_shape": [32, 32], "reorient": False})


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.tuples(st.integers(3, 70), st.integers(3, 70), st.integers(1, 12)),
    st.tuples(*[st.floats(0.5, 12.0)] * 3),
    st.integers(0, 2**16),
    st.sampled_from([1, 3]),
)
def test_cine_model_any_stack_gives_outputs_on_its_grid(shape, spacing, seed, mc):
    """A 2D cine model on any stack (any in-plane size, 1-12 slices, any spacing): no crash, outputs on
    the input grid, ACDC label values only."""
    rng = np.random.default_rng(seed)
    vol = Volume(rng.normal(size=shape).astype(np.float32), spacing)
    if min(shape[:2]) < MIN_MODEL_VOXELS:
        with pytest.raises(InputError, match="image is too small"):
            predict(NET_2D, vol, PREP_2D, (32, 32, 1), 4, mc)
        return
    pred = predict(NET_2D, vol, PREP_2D, (32, 32, 1), 4, mc, (0, 1))
    assert pred.labels.same_grid(vol) and pred.entropy.same_grid(vol)
    probs = pred.probabilities.array
    assert probs.shape == (4,) + shape and pred.sdm.array.shape == (3,) + shape
    assert set(np.unique(pred.labels.array)) <= {0, 1, 2, 3}
    assert np.isfinite(probs).all() and np.allclose(probs.sum(0), 1, atol=1e-4)
    assert pred.entropy.array.min() >= 0 and pred.entropy.array.max() <= math.log(4) + 1e-5
