"""Uncertain-region ranking on hand-made entropy maps."""

import math

import numpy as np
import pytest

from SemiSupCardiacSegLib.uncertain_regions import rank_uncertain_regions
from SemiSupCardiacSegLib.volume import Volume


def _map():
    e = np.zeros((40, 30, 20), np.float32)
    e[2:6, 2:6, 2:6] = 0.5  # 64 voxels, mean 0.5
    e[20:30, 10:20, 5:15] = 0.6  # 1000 voxels, mean 0.6
    e[20:30, 10:20, 10] = 0.69  # raises that block's max, not its rank
    e[35, 25, 15] = 0.69  # one voxel: below the minimum size
    # A crescent (hollow square ring in one slice, 3 voxels thick) whose centroid is outside it.
    e[5:15, 15:25, 17:20] = 0.45
    e[8:12, 18:22, 17:20] = 0.0
    return e


def test_regions_ranked_by_mean_entropy_with_centres_inside():
    vol = Volume(_map(), spacing=(1.0, 1.0, 2.0), origin=(10.0, -5.0, 3.0))
    regions = rank_uncertain_regions(vol, num_classes=2, min_volume_mm3=20.0)
    assert [round(r.mean_entropy, 3) for r in regions] == sorted(
        (round(r.mean_entropy, 3) for r in regions), reverse=True
    )
    assert len(regions) == 3  # the single voxel (2 mm^3) is dropped
    big, small, ring = regions
    assert big.volume_mm3 == pytest.approx(1000 * 2.0) and big.max_entropy == pytest.approx(0.69)
    assert small.mean_entropy == pytest.approx(0.5) and small.volume_mm3 == pytest.approx(128.0)
    e = _map()
    for r in regions:
        assert e[r.centre_index] > 0.5 * math.log(2)  # inside its own region, the ring included
        i, j, k = r.centre_index
        assert r.centre_lps == pytest.approx((10.0 + i, -5.0 + j, 3.0 + 2.0 * k))
        assert r.centre_ras == pytest.approx((-(10.0 + i), 5.0 - j, 3.0 + 2.0 * k))


def test_threshold_and_bad_maps():
    vol = Volume(_map())
    assert rank_uncertain_regions(vol, threshold=0.7) == []
    assert len(rank_uncertain_regions(vol, threshold=0.55, min_volume_mm3=0)) == 2  # big block and single voxel
    bad = _map()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        rank_uncertain_regions(Volume(bad))
    with pytest.raises(ValueError, match="negative"):
        rank_uncertain_regions(Volume(_map() - 1))
