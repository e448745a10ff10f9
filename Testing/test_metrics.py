"""Metrics against counts and distances worked out by hand."""

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from SemiSupCardiacSegLib.metrics import (
    asd,
    binary_metrics,
    dice,
    hausdorff,
    hd95,
    jaccard,
    precision,
    ravd,
    recall,
    summarize,
    surface,
    surface_distances,
)


def _cubes():
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros((10, 10, 10), bool)
    a[0:4, 0:4, 0:4] = True  # 64 voxels
    b[2:6, 0:4, 0:4] = True  # 64 voxels, overlap 2*4*4 = 32
    return a, b


def test_overlap_counts_by_hand():
    a, b = _cubes()
    assert dice(a, b) == pytest.approx(2 * 32 / 128)
    assert jaccard(a, b) == pytest.approx(32 / 96)
    assert precision(a, b) == pytest.approx(32 / 64)
    assert recall(a, b) == pytest.approx(32 / 64)
    c = np.zeros_like(a)
    c[0:4, 0:4, 0:2] = True  # 32 voxels, all inside a
    assert precision(c, a) == 1.0 and recall(c, a) == pytest.approx(0.5)
    assert ravd(c, a) == pytest.approx(0.5)


def test_plane_distances_anisotropic_by_hand():
    # Two one-voxel-thick planes 3 slices apart along z with 2.5 mm slices: every surface voxel of
    # one plane is exactly 7.5 mm from the other plane.
    a = np.zeros((6, 6, 8), bool)
    b = np.zeros((6, 6, 8), bool)
    a[:, :, 1] = True
    b[:, :, 4] = True
    sp = (1.0, 1.0, 2.5)
    assert hd95(a, b, sp) == pytest.approx(7.5)
    assert asd(a, b, sp) == pytest.approx(7.5)
    assert hausdorff(a, b, sp) == pytest.approx(7.5)


def test_shifted_square_2d_by_hand():
    a = np.zeros((20, 20), bool)
    a[5:10, 5:10] = True
    b = np.roll(a, 2, axis=0)
    # Shift of 2 voxels of 0.5 mm along x: the largest surface distance is 1 mm.
    assert hausdorff(a, b, (0.5, 1.0)) == pytest.approx(1.0)
    assert 0 < asd(a, b, (0.5, 1.0)) <= 1.0


def test_identical_masks():
    a, _ = _cubes()
    m = binary_metrics(a, a, (1, 1, 1))
    assert m["dice"] == 1 and m["hd95"] == 0 and m["asd"] == 0 and m["ravd"] == 0


def test_empty_mask_convention():
    e = np.zeros((5, 5, 5), bool)
    f = e.copy()
    f[1:3, 1:3, 1:3] = True
    both = binary_metrics(e, e, (1, 1, 1))
    assert both == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0, "ravd": 0.0, "precision": 1.0, "recall": 1.0}
    missed = binary_metrics(e, f, (1, 1, 1))
    assert missed["dice"] == 0 and missed["recall"] == 0 and missed["ravd"] == 1.0 and math.isnan(missed["hd95"])
    spurious = binary_metrics(f, e, (1, 1, 1))
    assert (
        spurious["dice"] == 0
        and spurious["precision"] == 0
        and math.isnan(spurious["ravd"])
        and math.isnan(spurious["asd"])
    )
    s = summarize([both, missed])
    assert s["hd95"]["n"] == 1 and s["hd95"]["n_nan"] == 1 and s["hd95"]["mean"] == 0.0
    assert s["dice"]["mean"] == pytest.approx(0.5)


def test_edt_path_matches_brute_force():
    rng = np.random.default_rng(3)
    from scipy import ndimage

    a = ndimage.gaussian_filter(rng.random((18, 16, 12)), 2) > 0.5
    b = ndimage.gaussian_filter(rng.random((18, 16, 12)), 2) > 0.5
    sp = np.array([0.8, 1.2, 2.0])
    pa, pb = np.argwhere(surface(a)) * sp, np.argwhere(surface(b)) * sp
    d = cdist(pa, pb)
    d_ab, d_ba = d.min(1), d.min(0)
    got_ab, got_ba = surface_distances(a, b, sp)
    np.testing.assert_allclose(np.sort(got_ab), np.sort(d_ab), atol=1e-9)
    assert hd95(a, b, sp) == pytest.approx(np.percentile(np.concatenate([d_ab, d_ba]), 95))
    assert asd(a, b, sp) == pytest.approx(d_ab.mean())


def test_bad_shapes_and_spacing():
    with pytest.raises(ValueError, match="shape"):
        dice(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="spacing"):
        hd95(np.ones((3, 3), bool), np.ones((3, 3), bool), (1.0, 0.0))


def test_brier_score_by_hand():
    import numpy as np
    import pytest

    from SemiSupCardiacSegLib.metrics import brier_score

    probs = np.array([[0.9, 0.2], [0.1, 0.8]])  # (K=2, 2 voxels)
    labels = np.array([0, 0])
    assert brier_score(probs, labels, 1) == pytest.approx((0.01 + 0.64) / 2)
    assert brier_score(probs, labels, 0) == pytest.approx((0.01 + 0.64) / 2)
    with pytest.raises(ValueError, match="do not match"):
        brier_score(probs, np.zeros(3, int), 1)


def test_near_region_equals_the_full_volume_distance_transform():
    """reporting.near_region works in a bounding box; it must equal the EDT over the whole volume,
    also for a structure touching the volume's faces, on an anisotropic grid."""
    from scipy import ndimage

    from SemiSupCardiacSegLib.reporting import near_region

    sp = (1.0, 1.5, 2.0)
    for box in ((slice(10, 15), slice(12, 20), slice(5, 9)), (slice(0, 4), slice(25, 30), slice(0, 20))):
        m = np.zeros((40, 30, 20), bool)
        m[box] = True
        assert np.array_equal(near_region(m, sp, 5.0), ndimage.distance_transform_edt(~m, sampling=sp) <= 5.0)
    assert not near_region(np.zeros((5, 5, 5), bool), sp).any()


def test_boundary_band_equals_the_full_volume_distance_transforms():
    """reporting.boundary_band runs its two EDTs in the mask's grown bounding box; the band must be
    the one of the whole-volume transforms, also for masks touching the faces, on anisotropic grids."""
    from scipy import ndimage

    from SemiSupCardiacSegLib.reporting import boundary_band

    rng = np.random.default_rng(0)
    for t in range(12):
        m = ndimage.binary_dilation(rng.random((30, 26, 18)) > 0.995, iterations=int(rng.integers(1, 4)))
        if t % 3 == 0:
            m[:5, :, :4] = True
        sp, w = tuple(rng.uniform(0.5, 2.5, 3)), float(rng.uniform(0.5, 5.0))
        d_out = ndimage.distance_transform_edt(~m, sampling=sp)
        d_in = ndimage.distance_transform_edt(m, sampling=sp)
        assert np.array_equal(boundary_band(m, sp, w), ((~m) & (d_out <= w)) | (m & (d_in <= w)))
