"""Coarse localization on large fields of view (inference/localize.py): the crop never cuts the
structure, the whole volume is segmented (and the report says why) when localization is unsure."""

from __future__ import annotations

import numpy as np
import pytest

from SemiSupCardiacSegLib.checkpoint import load_model
from SemiSupCardiacSegLib.inference import InferenceSettings, Predictor
from SemiSupCardiacSegLib.inference.localize import (
    AMBIGUOUS_SHARE,
    MARGIN_MM,
    MIN_MARGIN_MM,
    find_structure,
    margins_for_windows,
    model_box_to_input,
    touches_inner_face,
)
from SemiSupCardiacSegLib.inference.window import window_grid
from SemiSupCardiacSegLib.io import read_h5_case
from SemiSupCardiacSegLib.metrics import dice
from SemiSupCardiacSegLib.phantoms import make_la_phantom, pad_into_field
from SemiSupCardiacSegLib.preprocessing import Preprocessing, labels_to_model_space, to_model_space
from SemiSupCardiacSegLib.reporting import segmentation_report
from SemiSupCardiacSegLib.shipped import SHIPPED
from SemiSupCardiacSegLib.volume import Volume


def _inside(label: np.ndarray, box) -> bool:
    """Every structure voxel of ``label`` lies within ``box``."""
    outside = label > 0
    outside[tuple(box)] = False
    return not outside.any()


def test_a_model_box_maps_onto_the_input_box_through_reorientation_and_resampling():
    rng = np.random.default_rng(0)
    # axes permuted and flipped (the direction's columns), anisotropic spacing, off-centre blob
    direction = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    shape, spacing = (40, 90, 70), np.array([2.5, 0.7, 0.9])
    label = np.zeros(shape, np.uint8)
    label[5:17, 20:41, 33:61] = 1
    vol = Volume(rng.normal(size=shape).astype(np.float32), spacing, np.zeros(3), direction)
    msi = to_model_space(vol, Preprocessing(spacing=(1.25, 1.25, 1.25)))
    in_model = labels_to_model_space(vol.with_array(label), msi, 2)
    model_box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(in_model))
    box = model_box_to_input(msi, model_box, margin_mm=0.0)
    assert _inside(label, box)
    true_box = [(5, 17), (20, 41), (33, 61)]
    for b, (lo, hi), sp in zip(box, true_box, spacing):  # at most a model voxel (1.25 mm) and a voxel looser
        assert lo - b.start <= 1.25 / sp + 1 and b.stop - hi <= 1.25 / sp + 1
    wide = model_box_to_input(msi, model_box, margin_mm=10.0)
    for b, w, n, sp in zip(box, wide, shape, spacing):  # 10 mm more on each side, clipped to the volume
        grow = int(10.0 / sp)
        assert w.start <= max(0, b.start - grow) and w.stop >= min(n, b.stop + grow)
        assert 0 <= w.start and w.stop <= n


@pytest.mark.parametrize("permuted", [False, True])
def test_the_margin_shrinks_only_where_it_saves_the_fine_pass_a_row_of_windows(permuted):
    """margins_for_windows: every margin within [MIN_MARGIN_MM, MARGIN_MM]; the crop it gives (on the
    input grid, resampled as the fine pass sees it) needs no more windows than the least margin's, and
    fewer than the full margin's where a few mm cross a row of windows; input axes in any order."""
    direction = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]) if permuted else np.eye(3)
    shape, spacing = ((120, 400, 400), (0.7, 0.625, 0.6)) if permuted else ((400, 400, 120), (0.625,) * 3)
    rng = np.random.default_rng(0)
    vol = Volume(rng.random(shape, np.float32), np.array(spacing), np.zeros(3), direction)
    prep = Preprocessing(spacing=(1.25, 1.25, 1.25))
    msi = to_model_space(vol, prep)
    patch, overlap = (64, 64, 32), 0.5

    def windows(box) -> int:
        return len(window_grid(to_model_space(vol.crop(box), prep).array.shape, patch, overlap))

    saved, kept = 0, 0
    for length in range(20, 90, 3):
        model_box = (slice(60, 60 + length), slice(50, 50 + length // 2 + 10), slice(30, 30 + length // 3 + 5))
        margins = margins_for_windows(msi, model_box, patch, overlap)
        assert np.all((margins >= MIN_MARGIN_MM) & (margins <= MARGIN_MM))
        chosen = windows(model_box_to_input(msi, model_box, margins))
        assert chosen <= windows(model_box_to_input(msi, model_box, MIN_MARGIN_MM))
        full = windows(model_box_to_input(msi, model_box, MARGIN_MM))
        assert chosen <= full
        saved += chosen < full
        kept += int((margins == MARGIN_MM).sum())  # the full margin wherever it costs no window
    assert saved > 0 and kept > 0


def test_a_structure_touching_an_inner_crop_face_is_seen_and_one_at_the_volume_border_is_not():
    full = (50, 50, 50)
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[5:10, 5:10, 5:10] = 1
    inner = (slice(10, 30), slice(10, 30), slice(10, 30))
    assert not touches_inner_face(labels, inner, full)
    labels[0, 7, 7] = 1  # the crop's first x face, inside the volume
    assert touches_inner_face(labels, inner, full)
    at_border = (slice(0, 20), slice(10, 30), slice(10, 30))  # that face is the volume's own
    assert not touches_inner_face(labels, at_border, full)
    labels[7, 7, 19] = 1  # last z face, inside the volume
    assert touches_inner_face(labels, at_border, full)


@pytest.mark.parametrize("with_inside", [False, True])
def test_uncrop_puts_the_crop_back_and_fills_everything_else_as_empty(with_inside):
    """Prediction.uncrop: the crop's maps in the box; outside it (and where ``inside`` is False)
    label 0, background probability 1, SDM +1, uncertainty 0; a two-structure model's channels too."""
    from SemiSupCardiacSegLib.inference.predictor import Prediction, Timings

    rng = np.random.default_rng(0)
    full = Volume(np.zeros((20, 18, 12), np.float32), (1.0, 1.0, 2.0))
    box = (slice(3, 11), slice(5, 17), slice(0, 7))
    crop = full.crop(box)
    shape = crop.shape
    inside = rng.random(shape) > 0.3 if with_inside else None
    probs = rng.random((3,) + shape).astype(np.float32)
    pred = Prediction(
        labels=crop.with_array(rng.integers(0, 3, shape).astype(np.uint8)),
        probabilities=crop.with_array(probs / probs.sum(0)),
        sdm=crop.with_array(rng.uniform(-1, 1, (2,) + shape).astype(np.float32)),
        entropy=crop.with_array(rng.random(shape).astype(np.float32)),
        mutual_info=crop.with_array(rng.random(shape).astype(np.float32)),
        settings=InferenceSettings(patch_size=(8, 8, 8)),
        device="cpu",
        timings=Timings(0.0, 0.0, 0.0, 0.0),
    )
    out = pred.uncrop(full, box, inside)
    keep = np.zeros(full.shape, bool)
    keep[box] = True if inside is None else inside
    for big, small, fill in (
        (out.labels.array, pred.labels.array, 0),
        (out.entropy.array, pred.entropy.array, 0.0),
        (out.mutual_info.array, pred.mutual_info.array, 0.0),
        (out.probabilities.array[0], pred.probabilities.array[0], 1.0),
        (out.probabilities.array[2], pred.probabilities.array[2], 0.0),
        (out.sdm.array[1], pred.sdm.array[1], 1.0),
    ):
        assert big.shape == full.shape and np.all(big[~keep] == fill)
        assert np.array_equal(big[box][keep[box]], small[keep[box]])
    assert np.allclose(out.labels.spacing, full.spacing) and out.roi_box == box
    assert np.allclose(out.probabilities.array.sum(0), 1.0, atol=1e-5)


def test_find_structure_keeps_the_component_of_largest_mass_and_refuses_ambiguity():
    fg = np.zeros((40, 40, 40), np.float32)
    assert find_structure(fg, np.ones(3))[0] is None
    fg[2:12, 2:12, 2:12] = 0.6  # larger, less sure
    fg[25:33, 25:33, 25:33] = 0.99  # smaller, surer: 507 vs 600 mass
    box, reason, _, second = find_structure(fg, np.ones(3))
    assert box is None and "ambiguous" in reason and second > AMBIGUOUS_SHARE
    fg[2:12, 2:12, 2:12] = 0.51
    fg[25:33, 25:33, 25:33] = 0.0
    fg[30:32, 30:32, 30:32] = 0.9  # a speck
    box, reason, ml, second = find_structure(fg, np.ones(3))
    assert box == (slice(2, 12), slice(2, 12), slice(2, 12)) and second < 0.02
    assert ml == pytest.approx(1.0)  # 1000 voxels of 1 mm^3


@pytest.fixture(scope="module")
def shipped():
    if not SHIPPED["la"].path.is_file():
        pytest.skip("shipped LA model not present in models/")
    return load_model("la")


@pytest.fixture(scope="module")
def field():
    """An LA phantom in a 210 x 200 x 55 mm field (336 x 320 x 88 voxels at 0.625 mm: 9 windows of
    the LA model; ``MIN_WINDOWS`` 4 localize), atrium near the centre."""
    return make_la_phantom(shape=(336, 320, 88), seed=3)


def _settings(meta, **kw):
    return InferenceSettings.from_meta(meta, tta=False, mc_samples=1, device="cpu", **kw)


def test_a_large_field_is_segmented_on_a_crop_holding_the_whole_structure(shipped, field):
    net, meta = shipped
    vol = Volume(field.image, np.array(field.spacing), np.zeros(3), np.eye(3))
    pred = Predictor(net, meta, _settings(meta)).predict(vol)
    loc = pred.localization
    assert loc is not None and loc.box is not None, loc
    assert _inside(field.label, loc.box)
    share = np.prod([b.stop - b.start for b in loc.box]) / np.prod(vol.shape)
    assert share < 0.5
    assert pred.labels.same_grid(vol) and pred.entropy.array.shape == vol.shape
    outside = np.ones(vol.shape, bool)
    outside[loc.box] = False
    assert not pred.labels.array[outside].any() and np.isfinite(pred.entropy.array).all()
    whole = Predictor(net, meta, _settings(meta, localize=False)).predict(vol)
    assert whole.localization is None
    d_loc, d_whole = dice(pred.labels.array > 0, field.label > 0), dice(whole.labels.array > 0, field.label > 0)
    assert d_loc >= d_whole - 0.01, (d_loc, d_whole)
    report = segmentation_report(pred, meta)
    assert report["localization"]["box"] == [[b.start, b.stop] for b in loc.box]
    assert report["timings_s"]["localize"] is True


@pytest.mark.parametrize("where", ["at the border", "in a corner"])
def test_a_structure_off_centre_or_at_the_field_border_is_kept_whole(shipped, field, where):
    net, meta = shipped
    xs, ys = field.label.nonzero()[:2]
    if where == "at the border":  # the field starts 12 voxels into the atrium
        box = (slice(xs.min() + 12, None), slice(None), slice(None))
    else:  # the atrium about 40 voxels (25 mm) from two faces
        box = (slice(xs.min() - 40, None), slice(ys.min() - 40, None), slice(None))
    img, lab = field.image[box], field.label[box]
    vol = Volume(np.ascontiguousarray(img), np.array(field.spacing), np.zeros(3), np.eye(3))
    pred = Predictor(net, meta, _settings(meta)).predict(vol)
    loc = pred.localization
    assert loc is not None and loc.box is not None, loc
    assert _inside(lab, loc.box)
    if where == "at the border":
        assert loc.box[0].start == 0
    assert dice(pred.labels.array > 0, lab > 0) > 0.6


def test_two_candidate_structures_fall_back_to_the_whole_volume_and_say_why(shipped, field):
    net, meta = shipped
    xs = field.label.nonzero()[0]
    one = field.image[max(0, xs.min() - 30) : xs.max() + 30]
    twin = np.concatenate([one, one], axis=0)  # two copies of the atrium side by side
    vol = Volume(np.ascontiguousarray(twin), np.array(field.spacing), np.zeros(3), np.eye(3))
    pred = Predictor(net, meta, _settings(meta)).predict(vol)
    assert pred.localization is not None and pred.localization.box is None
    assert "ambiguous" in pred.localization.reason and "whole volume" in pred.localization.reason
    assert segmentation_report(pred, meta)["localization"]["box"] is None


def test_a_real_la_case_padded_into_a_scanner_field_scores_as_its_crop(la_dir, shipped):
    net, meta = shipped
    name = meta.training_data["validation_cases"][0]
    image, label = read_h5_case(la_dir / "train" / f"{name}.h5")
    vol, big_label = pad_into_field(image, label, (576, 576, image.shape[2]))
    big_label = big_label.array
    pred = Predictor(net, meta, _settings(meta)).predict(vol)
    loc = pred.localization
    assert loc is not None and loc.box is not None, loc
    assert _inside(big_label, loc.box)
    own = Predictor(net, meta, _settings(meta)).predict(image)
    d_big, d_own = dice(pred.labels.array > 0, big_label > 0), dice(own.labels.array > 0, label.array > 0)
    assert d_big >= d_own - 0.01, (name, d_big, d_own)
