"""Two-stream sampler, crops and augmentation."""

import numpy as np
import pytest

from SemiSupCardiacSegLib.data import CropDataset, TwoStreamBatchSampler
from SemiSupCardiacSegLib.data.datasets import Case
from SemiSupCardiacSegLib.data.transforms import (
    _gamma,
    random_background_field,
    random_crop,
    random_fold,
    random_intensity,
    random_rot_flip,
)


def test_fixed_labeled_count_and_epoch_coverage():
    labeled, unlabeled = list(range(5)), list(range(5, 17))
    s = TwoStreamBatchSampler(labeled, unlabeled, batch_size=4, labeled_per_batch=2, num_batches=10, seed=3)
    batches = list(s)
    assert len(batches) == 10
    for b in batches:
        idx = [i for i, _ in b]
        assert len(idx) == 4
        assert all(i in labeled for i in idx[:2]) and all(i in unlabeled for i in idx[2:])
    # The labeled stream is a sequence of permutations: the first 5 labeled draws cover all 5 cases.
    lab_stream = [i for b in batches for i, _ in b[:2]]
    assert sorted(lab_stream[:5]) == labeled and sorted(lab_stream[5:10]) == labeled
    unl_stream = [i for b in batches for i, _ in b[2:]]
    assert sorted(unl_stream[:12]) == unlabeled


def test_deterministic_and_resumable():
    args = dict(labeled=range(4), unlabeled=range(4, 10), batch_size=4, labeled_per_batch=2, num_batches=8, seed=7)
    full = list(TwoStreamBatchSampler(**args))
    resumed = list(TwoStreamBatchSampler(**args, start_batch=5))
    assert resumed == full[5:]
    other_seed = list(TwoStreamBatchSampler(**{**args, "seed": 8}))
    assert other_seed != full


def test_ranks_do_not_share_samples_in_a_step():
    args = dict(labeled=range(8), unlabeled=range(8, 24), batch_size=4, labeled_per_batch=2, num_batches=1, seed=0)
    r0 = TwoStreamBatchSampler(**args, rank=0, world_size=2).batch(0)
    r1 = TwoStreamBatchSampler(**args, rank=1, world_size=2).batch(0)
    assert not ({i for i, _ in r0} & {i for i, _ in r1})


def test_invalid_configurations_raise():
    with pytest.raises(ValueError, match="no labeled"):
        TwoStreamBatchSampler([], [1], 4, 2, 1)
    with pytest.raises(ValueError, match="no unlabeled"):
        TwoStreamBatchSampler([0], [], 4, 2, 1)
    with pytest.raises(ValueError, match="labeled_per_batch"):
        TwoStreamBatchSampler([0], [1], 4, 5, 1)


def test_crop_pads_small_volumes_and_keeps_alignment():
    rng = np.random.default_rng(0)
    image = np.arange(10 * 6 * 4, dtype=np.float32).reshape(10, 6, 4) + 1
    label = (image % 3 == 0).astype(np.uint8)
    for _ in range(5):
        ci, cl = random_crop(image, label, (8, 8, 8), rng)
        assert ci.shape == cl.shape == (8, 8, 8)
        # The label still marks exactly the image voxels divisible by 3 (padding: image 0, label 0).
        np.testing.assert_array_equal(cl.astype(bool), (ci % 3 == 0) & (ci > 0))
        ri, rl = random_rot_flip(ci, cl, rng)
        np.testing.assert_array_equal(rl.astype(bool), (ri % 3 == 0) & (ri > 0))


def test_dataset_items_and_sdm_targets():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(20, 20, 16)).astype(np.float32)
    lab = np.zeros((20, 20, 16), np.uint8)
    lab[6:14, 6:14, 4:12] = 1
    ds = CropDataset([Case("a", img, lab), Case("b", img, None)], (16, 16, 16), num_classes=2)
    a, b = ds[(0, 123)], ds[(1, 5)]
    assert (
        a["image"].shape == (1, 16, 16, 16) and a["label"].shape == (16, 16, 16) and a["sdm"].shape == (1, 16, 16, 16)
    )
    assert a["labeled"] and not b["labeled"]
    inside = a["label"].numpy() == 1
    assert (a["sdm"][0].numpy()[inside] <= 0).all() and (a["sdm"][0].numpy()[~inside] > 0).all()
    # Same key -> same sample (workers can't change what is drawn).
    assert (ds[(0, 123)]["image"] == a["image"]).all()


def test_intensity_augmentation_rates_and_what_it_keeps():
    """random_intensity: the same seed gives the same crop; a crop is changed at the rate its
    probabilities give (1 - 0.9 * 0.85 * 0.85 * 0.9 * 0.7 = 0.590); gamma changes the histogram's
    shape but keeps mean and std; turning it on in CropDataset moves no crop (the labels agree)."""
    image = np.random.default_rng(2).normal(size=(16, 16, 8)).astype(np.float32)
    same = random_intensity(image, np.random.default_rng(7)), random_intensity(image, np.random.default_rng(7))
    np.testing.assert_array_equal(*same)
    changed = [not np.array_equal(random_intensity(image, np.random.default_rng(s)), image) for s in range(1000)]
    assert 0.55 < np.mean(changed) < 0.63
    g = _gamma(image, 1.5)
    assert abs(g.mean() - image.mean()) < 1e-4 and abs(g.std() - image.std()) < 1e-4
    assert np.corrcoef(g.ravel(), image.ravel())[0, 1] < 0.999  # a curved map, not a linear one
    assert np.all(np.diff(g.ravel()[np.argsort(image.ravel())]) >= -1e-5)  # monotone: order kept

    lab = np.zeros((20, 20, 16), np.uint8)
    lab[3:15, 5:12, 2:9] = 1
    img = np.random.default_rng(3).normal(size=lab.shape).astype(np.float32) + lab
    plain, aug = (CropDataset([Case("a", img, lab)], (16, 16, 8), 2, intensity=i) for i in (False, True))
    items = [(plain[(0, s)], aug[(0, s)]) for s in range(40)]
    assert all((a["label"] == b["label"]).all() for a, b in items)
    assert sum(not (a["image"] == b["image"]).all() for a, b in items) > 10


def test_fold_turns_the_tissue_at_its_centre_dark_and_is_applied_to_labeled_crops_only():
    """random_fold: |x - c| restandardized (mean and std kept); the intensity at c becomes the
    darkest, so a bright region equal to c turns dark while brighter walls stay bright. In
    CropDataset it changes labeled crops at its rate and never an unlabeled crop, and moves no crop."""
    image = np.random.default_rng(2).normal(size=(16, 16, 8)).astype(np.float32)
    y = random_fold(image, np.random.default_rng(0))
    assert abs(y.mean() - image.mean()) < 1e-4 and abs(y.std() - image.std()) < 1e-4
    np.testing.assert_array_equal(y, random_fold(image, np.random.default_rng(0)))
    lo, hi = np.percentile(image, [10, 90])
    c = np.random.default_rng(0).uniform(lo, hi)
    nearest = np.abs(image - c).argmin()
    assert y.ravel()[nearest] == y.min()  # the voxel nearest the fold is now the darkest
    # a pool (1.0) between background (0.0) and walls (3.0), folded at the pool: pool darkest, walls brightest
    pool = np.zeros((10, 10, 10), np.float32)
    pool[2:8, 2:8, 2:8], pool[2:8, 2:8, 1] = 1.0, 3.0

    class At:  # a generator whose fold centre is the pool's intensity
        @staticmethod
        def uniform(lo, hi):
            return 1.0

    folded = random_fold(pool, At())
    assert folded[4, 4, 4] < folded[0, 0, 0] < folded[4, 4, 1]

    lab = np.zeros((20, 20, 16), np.uint8)
    lab[3:15, 5:12, 2:9] = 1
    img = np.random.default_rng(3).normal(size=lab.shape).astype(np.float32) + lab
    plain, fold = (CropDataset([Case("a", img, lab)], (16, 16, 8), 2, fold=p) for p in (0.0, 0.3))
    items = [(plain[(0, s)], fold[(0, s)]) for s in range(200)]
    assert all((a["label"] == b["label"]).all() for a, b in items)
    rate = np.mean([not (a["image"] == b["image"]).all() for a, b in items])
    assert 0.2 < rate < 0.4
    unlabeled = CropDataset([Case("u", img, None)], (16, 16, 8), 2, fold=1.0)
    plain_u = CropDataset([Case("u", img, None)], (16, 16, 8), 2)
    assert all((unlabeled[(0, s)]["image"] == plain_u[(0, s)]["image"]).all() for s in range(20))


def test_background_field_replaces_a_slab_from_one_face_with_dark_noise_labelled_background():
    """random_background_field: one slab from one face along one axis, 25-100 % thick, becomes
    normal noise around a percentile at or below the median, and its labels background; the rest
    of the crop is untouched. A whole crop of noise comes about a quarter of the time. In
    CropDataset it acts on labeled crops only, at its rate, after any fold."""
    rng = np.random.default_rng(5)
    lab = np.zeros((24, 20, 16), np.uint8)
    lab[6:18, 5:15, 4:12] = 1
    img = (rng.normal(size=lab.shape) + 3.0 * lab).astype(np.float32)
    whole = 0
    for seed in range(200):
        x, y = random_background_field(img, lab, np.random.default_rng(seed))
        changed = x != img
        assert x.dtype == np.float32 and y.dtype == lab.dtype and x.shape == img.shape
        assert not y[changed].any()  # every replaced voxel is background
        assert (y[~changed] == lab[~changed]).all()  # the rest keeps its labels
        # the changed voxels form a slab: along exactly one axis they are a run touching a face
        runs = [np.flatnonzero(changed.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
        full = [len(r) == img.shape[a] for a, r in enumerate(runs)]
        assert sum(full) >= 2
        whole += bool(changed.all())
        axis = [a for a in range(3) if not full[a]]
        if axis:
            r = runs[axis[0]]
            assert r[0] == 0 or r[-1] == img.shape[axis[0]] - 1  # from one face
            assert len(r) >= 0.25 * img.shape[axis[0]] - 1 and (np.diff(r) == 1).all()
            assert changed.sum() == img.size // img.shape[axis[0]] * len(r)  # all of the slab
        assert np.median(x[changed]) <= np.median(img) + 0.5  # dark: about a percentile in 5..50
    assert 25 < whole < 80  # the whole crop about 1/4 of the time
    again = (random_background_field(img, lab, np.random.default_rng(1))[0] for _ in range(2))
    np.testing.assert_array_equal(*again)
    plain, field = (CropDataset([Case("a", img, lab)], (16, 16, 8), 2, field=p) for p in (0.0, 0.25))
    items = [(plain[(0, s)], field[(0, s)]) for s in range(200)]
    rate = np.mean([not (a["image"] == b["image"]).all() for a, b in items])
    assert 0.15 < rate < 0.35
    assert all(b["label"].sum() <= a["label"].sum() for a, b in items)
    unlabeled = CropDataset([Case("u", img, None)], (16, 16, 8), 2, field=1.0)
    plain_u = CropDataset([Case("u", img, None)], (16, 16, 8), 2)
    assert all((unlabeled[(0, s)]["image"] == plain_u[(0, s)]["image"]).all() for s in range(20))
