"""Geometry: NRRD round trip, reorientation of oblique volumes, model-space round trip onto the input grid."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from SemiSupCardiacSegLib.errors import InputError
from SemiSupCardiacSegLib.io import read_h5_case, read_volume, write_volume
from SemiSupCardiacSegLib.preprocessing import Preprocessing, labels_to_model_space, to_model_space
from SemiSupCardiacSegLib.volume import Volume, canonical_reorientation, reorient_volume


def _oblique_volume(rng, shape=(20, 16, 12), spacing=(0.8, 1.3, 2.1)):
    direction = Rotation.from_euler("xyz", [25, -40, 70], degrees=True).as_matrix()
    return Volume(rng.normal(size=shape).astype(np.float32), spacing, (12.5, -30.0, 7.25), direction)


def test_nrrd_round_trip_keeps_voxels_and_geometry(tmp_path):
    rng = np.random.default_rng(0)
    vol = _oblique_volume(rng)
    path = write_volume(vol, tmp_path / "v.nrrd")
    back = read_volume(path)
    assert back.same_grid(vol)
    np.testing.assert_array_equal(back.array, vol.array)
    with pytest.raises(FileExistsError):
        write_volume(vol, tmp_path / "v.nrrd")  # never overwrite silently


def test_index_convention_matches_sitk(tmp_path):
    import SimpleITK as sitk

    arr = np.zeros((5, 4, 3), np.uint8)
    arr[4, 1, 2] = 7  # voxel (i=4, j=1, k=2)
    write_volume(Volume(arr, (1, 1, 1)), tmp_path / "a.nrrd")
    img = sitk.ReadImage(str(tmp_path / "a.nrrd"))
    assert img.GetSize() == (5, 4, 3)
    assert img.GetPixel(4, 1, 2) == 7


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reorientation_keeps_physical_positions(seed):
    rng = np.random.default_rng(seed)
    vol = _oblique_volume(rng)
    reo = canonical_reorientation(vol.direction)
    out = reorient_volume(vol, reo)
    # The new direction is the closest to identity: positive diagonal, largest entries on it.
    assert np.all(np.diag(out.direction) > 0)
    # Each voxel keeps its physical position: compare a few random voxels.
    m_in, m_out = vol.index_to_physical(), out.index_to_physical()
    for _ in range(10):
        idx_out = np.array([rng.integers(0, s) for s in out.shape])
        value = out.array[tuple(idx_out)]
        p = m_out @ np.r_[idx_out, 1.0]
        idx_in = np.linalg.solve(m_in, p)[:3]
        np.testing.assert_allclose(idx_in, np.round(idx_in), atol=1e-6)
        assert vol.array[tuple(np.round(idx_in).astype(int))] == value
    np.testing.assert_array_equal(reo.invert(out.array), vol.array)


def test_model_space_round_trip_anisotropic_oblique():
    # A smooth ball on an oblique anisotropic grid, mapped to a 1.25 mm model grid and back.
    shape, spacing = (60, 48, 20), np.array([0.7, 0.9, 2.0])
    direction = Rotation.from_euler("zyx", [100, 10, -5], degrees=True).as_matrix()
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    phys = idx * spacing
    centre = np.array(shape) * spacing / 2
    r = np.linalg.norm(phys - centre, axis=-1)
    image = (1.0 / (1.0 + np.exp((r - 12.0) / 1.5))).astype(np.float32)
    vol = Volume(image, spacing, (3.0, 4.0, 5.0), direction)
    msi = to_model_space(vol, Preprocessing((1.25, 1.25, 1.25)))
    back = msi.to_input_grid(msi.array)
    assert back.shape == vol.shape
    # z-scored in model space: undo normalization with the input's own mapping and compare.
    a, b = np.polyfit(back.ravel(), image.ravel(), 1)
    err = np.abs(a * back + b - image)
    assert np.percentile(err, 99) < 0.06  # linear interpolation error of a smooth profile
    # Labels: ball mask round trip through model space keeps Dice high.
    lab = Volume((r <= 12.0).astype(np.uint8), spacing, (3.0, 4.0, 5.0), direction)
    ms_lab = labels_to_model_space(lab, msi, 2)
    back_lab = msi.to_input_grid(ms_lab.astype(np.float32)) > 0.5
    inter = (back_lab & (lab.array > 0)).sum()
    assert 2 * inter / (back_lab.sum() + lab.array.sum()) > 0.95


def test_h5_geometry_convention(tmp_path):
    import h5py

    arr = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["image"] = arr
        f["label"] = (arr > 10).astype(np.uint8)
    image, label = read_h5_case(tmp_path / "c.h5")
    np.testing.assert_array_equal(image.array, arr)  # NRRD voxel (i,j,k) = h5 [i,j,k]
    np.testing.assert_allclose(image.spacing, [0.625] * 3)
    np.testing.assert_allclose(image.direction, np.eye(3))
    write_volume(image, tmp_path / "c.nrrd")
    np.testing.assert_array_equal(read_volume(tmp_path / "c.nrrd").array, arr)


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(InputError, match="NaN or Inf"):
        to_model_space(Volume(np.full((8, 8, 8), np.nan, np.float32)), Preprocessing())
    with pytest.raises(InputError, match="constant"):
        to_model_space(Volume(np.ones((8, 8, 8), np.float32)), Preprocessing())
    with pytest.raises(ValueError, match="spacing"):
        Volume(np.zeros((2, 2, 2)), spacing=(1, 0, 1))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="unsupported file type"):
        read_volume(tmp_path / "x.txt")
    (tmp_path / "bad.nrrd").write_bytes(b"NRRD0004\ntruncated")
    with pytest.raises(InputError, match="cannot read"):
        read_volume(tmp_path / "bad.nrrd")


def test_more_bad_inputs_name_the_problem(tmp_path):
    """4D input, an image and label on different grids, label values beyond the model's classes."""
    import SimpleITK as sitk

    from SemiSupCardiacSegLib.data import find_cases, load_case
    from SemiSupCardiacSegLib.io import write_volume

    four_d = sitk.GetImageFromArray(np.zeros((2, 4, 4, 4), np.float32), isVector=False)
    sitk.WriteImage(four_d, str(tmp_path / "cine4d.nii.gz"))
    with pytest.raises(InputError, match="expected a 3D image, got 4D"):
        read_volume(tmp_path / "cine4d.nii.gz")
    img = Volume(np.random.default_rng(0).normal(size=(10, 10, 10)).astype(np.float32), spacing=(1.0, 1.0, 1.0))
    lab = np.zeros((10, 10, 10), np.uint8)
    lab[3:6, 3:6, 3:6] = 1
    (tmp_path / "a").mkdir()
    write_volume(img, tmp_path / "a" / "c.nrrd")
    write_volume(Volume(lab, spacing=(2.0, 1.0, 1.0)), tmp_path / "a" / "c_label.nrrd")
    (case,) = find_cases(tmp_path / "a")
    with pytest.raises(InputError, match="different geometry"):
        load_case(case, Preprocessing(spacing=(1.0, 1.0, 1.0)), 2)
    (tmp_path / "b").mkdir()
    write_volume(img, tmp_path / "b" / "c.nrrd")
    write_volume(Volume(lab * 5, spacing=(1.0, 1.0, 1.0)), tmp_path / "b" / "c_label.nrrd")
    (case,) = find_cases(tmp_path / "b")
    with pytest.raises(InputError, match="label values 0, 5 but the labels must be 0..1"):
        load_case(case, Preprocessing(spacing=(1.0, 1.0, 1.0)), 2)
