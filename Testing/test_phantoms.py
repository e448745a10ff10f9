"""The synthetic LA phantom: deterministic, plausible size and contrast, one connected label."""

import numpy as np
import pytest
from scipy import ndimage

from SemiSupCardiacSegLib.phantoms import make_la_phantom, write_phantom_h5


@pytest.fixture(scope="module")
def phantom():
    return make_la_phantom(seed=0)


def test_deterministic_and_seed_dependent(phantom):
    again = make_la_phantom(seed=0)
    np.testing.assert_array_equal(again.image, phantom.image)
    np.testing.assert_array_equal(again.label, phantom.label)
    other = make_la_phantom(seed=1)
    assert not np.array_equal(other.label, phantom.label)


def test_shape_dtype_zscore_and_volume(phantom):
    assert phantom.image.shape == phantom.label.shape == (160, 144, 88)
    assert phantom.image.dtype == np.float32 and phantom.label.dtype == np.uint8
    assert abs(phantom.image.mean()) < 1e-3 and abs(phantom.image.std() - 1) < 1e-3
    ml = phantom.label.sum() * np.prod(phantom.spacing) / 1000
    assert 15 < ml < 80
    assert ndimage.label(phantom.label)[1] == 1


def test_blood_pool_brighter_than_surrounding_shell(phantom):
    lab = phantom.label.astype(bool)
    shell = ndimage.binary_dilation(lab, iterations=6) & ~ndimage.binary_dilation(lab, iterations=2)
    assert phantom.image[lab].mean() > phantom.image[shell].mean() + 0.5


def test_physical_size_independent_of_spacing(phantom):
    coarse = make_la_phantom(shape=(80, 72, 44), spacing=(1.25, 1.25, 1.25), seed=0)
    ml_fine = phantom.label.sum() * 0.625**3 / 1000
    ml_coarse = coarse.label.sum() * 1.25**3 / 1000
    assert ml_coarse == pytest.approx(ml_fine, rel=0.15)


def test_h5_round_trip(phantom, tmp_path):
    import h5py

    write_phantom_h5(phantom, tmp_path / "p.h5")
    with h5py.File(tmp_path / "p.h5", "r") as f:
        np.testing.assert_array_equal(f["image"][()], phantom.image)
        np.testing.assert_array_equal(f["label"][()], phantom.label)
