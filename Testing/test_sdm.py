"""Signed distance maps against hand-made shapes and scipy's EDT."""

import numpy as np
import pytest
from scipy import ndimage

from SemiSupCardiacSegLib.sdm import multiclass_sdm, sdm_to_probability, signed_distance_map


def test_1d_line_values_by_hand():
    # A 1 x 1 x 11 bar with foreground at indices 3..7 (5 voxels).
    mask = np.zeros((1, 1, 11), bool)
    mask[0, 0, 3:8] = True
    sdm = signed_distance_map(mask)[0, 0]
    # Inside distances to background: 1,2,3,2,1 -> max 3; ends (3 and 7) are boundary -> 0.
    np.testing.assert_allclose(sdm[3:8], [0, -2 / 3, -1, -2 / 3, 0], atol=1e-6)
    # Outside distances: index 0..2 -> 3,2,1 ; 8..10 -> 1,2,3 ; max 3.
    np.testing.assert_allclose(sdm[:3], [1, 2 / 3, 1 / 3], atol=1e-6)
    np.testing.assert_allclose(sdm[8:], [1 / 3, 2 / 3, 1], atol=1e-6)


def test_sphere_sign_range_and_boundary():
    g = np.mgrid[:40, :40, :40]
    mask = ((g - 20) ** 2).sum(0) <= 10**2
    sdm = signed_distance_map(mask)
    assert sdm.dtype == np.float32 and sdm.shape == mask.shape
    assert sdm.min() == pytest.approx(-1.0) and sdm.max() == pytest.approx(1.0)
    boundary = mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1))
    assert np.all(sdm[boundary] == 0)
    assert np.all(sdm[mask & ~boundary] < 0)
    assert np.all(sdm[~mask] > 0)
    # Centre is the deepest point.
    assert sdm[20, 20, 20] == pytest.approx(-1.0)


def test_matches_scipy_edt_with_anisotropic_spacing():
    rng = np.random.default_rng(0)
    mask = ndimage.gaussian_filter(rng.random((24, 20, 16)), 3) > 0.5
    spacing = (0.7, 1.1, 2.5)
    sdm = signed_distance_map(mask, spacing)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    boundary = mask & ~ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 1), border_value=1)
    expected = outside / outside.max() - inside / inside.max()
    expected[boundary] = 0
    np.testing.assert_allclose(sdm, expected, atol=1e-6)


def test_empty_and_full_masks_are_finite():
    empty = signed_distance_map(np.zeros((5, 6, 7), bool))
    full = signed_distance_map(np.ones((5, 6, 7), bool))
    assert np.all(empty == 1.0) and np.all(full == -1.0)
    assert np.isfinite(empty).all() and np.isfinite(full).all()


def test_multiclass_and_2d():
    labels = np.zeros((30, 30), np.uint8)
    labels[5:12, 5:12] = 1
    labels[15:25, 15:25] = 2
    sdm = multiclass_sdm(labels, 4)
    assert sdm.shape == (3, 30, 30)
    assert sdm[0][8, 8] < 0 and sdm[0][20, 20] > 0
    assert sdm[1][20, 20] < 0 and sdm[1][8, 8] > 0
    assert np.all(sdm[2] == 1.0)  # class 3 absent -> "far outside"


def test_sdm_to_probability_inverts_sign():
    sdm = np.array([-1.0, -0.01, 0.0, 0.01, 1.0])
    p = sdm_to_probability(sdm, k=1500)
    assert p[0] > 0.999 and p[-1] < 0.001 and p[2] == pytest.approx(0.5)
