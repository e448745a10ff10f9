"""Cine (2D short-axis) path: phantoms, both ACDC layouts, in-plane model space, cardiac indices,
a tiny BMT-CTL run on phantoms and ``segment`` with a cine model (h5 array order kept)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import CINE_TINY, write_cine_frames

from SemiSupCardiacSegLib.cardiac import cardiac_indices, ejection_fraction
from SemiSupCardiacSegLib.cine_phantoms import make_cine_phantom, write_acdc_h5, write_acdc_patient
from SemiSupCardiacSegLib.data import find_cases
from SemiSupCardiacSegLib.data.acdc import read_acdc_patient
from SemiSupCardiacSegLib.errors import InputError
from SemiSupCardiacSegLib.io import read_h5_case, read_label, read_volume
from SemiSupCardiacSegLib.metrics import dice
from SemiSupCardiacSegLib.preprocessing import Preprocessing, labels_to_model_space, to_model_space


def test_cine_phantom_anatomy_varies_base_to_apex_and_ed_to_es():
    ed, es = make_cine_phantom(4, "ED"), make_cine_phantom(4, "ES")
    for ph in (ed, es):
        assert set(np.unique(ph.label)) == {0, 1, 2, 3}
    lv = lambda p: (p.label == 3).sum(axis=(0, 1))  # noqa: E731
    assert lv(ed)[0] > lv(ed)[len(lv(ed)) // 2] > lv(ed)[-2]  # LV narrows towards the apex
    assert (ed.label == 3).sum() > 1.3 * (es.label == 3).sum()  # LV blood pool smaller at ES
    assert (ed.label[..., 0] == 1).any() and not (ed.label[..., -1] == 1).any()  # RV only towards the base
    # The myocardium surrounds the LV: every LV voxel's in-plane neighbours are LV or myocardium.
    k = 2
    lvm = ed.label[..., k] == 3
    ring = np.zeros_like(lvm)
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        ring |= np.roll(lvm, (dx, dy), axis=(0, 1))
    assert set(np.unique(ed.label[..., k][ring & ~lvm])) <= {2}
    # Same seed, same patient geometry at ED: deterministic.
    assert np.array_equal(make_cine_phantom(4, "ED").label, ed.label)


def test_acdc_nifti_layout_reader(tmp_path):
    for p in (1, 2):
        write_acdc_patient(tmp_path, p, es_frame=9 + p)
    cases = find_cases(tmp_path)
    assert [c.name for c in cases] == [
        "patient001_frame01",
        "patient001_frame10",
        "patient002_frame01",
        "patient002_frame11",
    ]
    assert all(c.label is not None for c in cases)
    pat = read_acdc_patient(tmp_path / "patient002")
    assert pat.info["ED"] == "1" and pat.es.name == "patient002_frame11"
    img = read_volume(pat.ed.image)
    assert img.shape == (128, 128, 10) and np.allclose(img.spacing, (1.5, 1.5, 8.0))
    assert set(np.unique(read_label(pat.ed.label).array)) == {0, 1, 2, 3}
    # A single patient folder works too; broken Info.cfg / missing frames name the problem.
    assert len(find_cases(tmp_path / "patient001")) == 2
    (tmp_path / "patient002" / "Info.cfg").write_text("Group: NOR\n")
    with pytest.raises(InputError, match="'ED' frame number missing"):
        read_acdc_patient(tmp_path / "patient002")
    (tmp_path / "patient002" / "Info.cfg").write_text("ED: 1\nES: 5\n")
    with pytest.raises(InputError, match="frame05.nii.gz is missing"):
        read_acdc_patient(tmp_path / "patient002")


def test_acdc_h5_layout_matches_nifti_layout(tmp_path):
    ph = make_cine_phantom(2, "ES")
    write_acdc_h5(ph, tmp_path / "p_frame02.h5")
    with h5py.File(tmp_path / "p_frame02.h5") as f:
        assert f["image"].shape == (10, 128, 128)  # (slices, H, W) as ../shared/data/ACDC
    image, label = read_h5_case(tmp_path / "p_frame02.h5")
    assert image.shape == ph.image.shape and np.array_equal(label.array, ph.label)
    # min-max scaling only: perfectly correlated with the phantom image
    assert np.corrcoef(image.array.ravel(), ph.image.ravel())[0, 1] > 0.9999


def test_in_plane_model_space_round_trip():
    ph = make_cine_phantom(1, "ED")
    from SemiSupCardiacSegLib.volume import Volume

    vol = Volume(ph.image, spacing=ph.spacing)
    prep = Preprocessing.from_dict({"in_plane_shape": [64, 64], "reorient": False})
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    msi = to_model_space(vol, prep)
    assert msi.array.shape == (64, 64, 10) and np.allclose(msi.model_spacing, (3.0, 3.0, 8.0))
    lab = labels_to_model_space(Volume(ph.label, spacing=ph.spacing), msi, 4)
    assert lab.shape == (64, 64, 10)
    onehot = np.stack([(lab == c).astype(np.float32) for c in range(4)])
    back = np.argmax(msi.to_input_grid(onehot), 0)
    assert back.shape == ph.label.shape
    for c in (1, 2, 3):
        assert dice(back == c, ph.label == c) > 0.85


def test_cardiac_indices_by_hand():
    ed = np.zeros((10, 10, 3), np.uint8)
    es = np.zeros_like(ed)
    ed[:4, :5, :2] = 3  # 40 LV voxels
    es[:2, :5, :2] = 3  # 20
    ed[5:8, :, 0] = 1  # 30 RV voxels
    es[5:7, :, 0] = 1  # 20
    ed[:5, 6:8, :] = 2  # 30 myo voxels
    sp = (1.5, 1.5, 10.0)  # 22.5 mm^3 per voxel
    r = cardiac_indices(ed, es, sp)
    assert r["lv_edv_ml"] == pytest.approx(40 * 22.5 / 1000) and r["lv_esv_ml"] == pytest.approx(20 * 22.5 / 1000)
    assert r["lv_ef_percent"] == pytest.approx(50.0) and r["rv_ef_percent"] == pytest.approx(100 * 10 / 30)
    assert r["myo_mass_g"] == pytest.approx(30 * 22.5 / 1000 * 1.05)
    assert r["myo_area_mm2"]["ED"] == pytest.approx([10 * 2.25] * 3)
    assert np.isnan(ejection_fraction(0.0, 0.0))
    with pytest.raises(InputError, match="no left ventricle"):
        cardiac_indices(es * 0, es, sp)
    with pytest.raises(InputError, match="differ in shape"):
        cardiac_indices(ed, es[..., :2], sp)


def test_indices_cli_on_acdc_patient_reference(tmp_path, capsys):
    from SemiSupCardiacSegLib.cli import main

    write_acdc_patient(tmp_path, 7)
    assert (
        main(["indices", "--patient", str(tmp_path / "patient007"), "--reference", "--out", str(tmp_path / "i.json")])
        == 0
    )
    r = json.loads((tmp_path / "i.json").read_text())
    assert 40 < r["lv_ef_percent"] < 75 and r["lv_edv_ml"] > r["lv_esv_ml"] > 0
    assert len(r["myo_area_mm2"]["ED"]) == 10 and r["spacing_mm"] == [1.5, 1.5, 8.0]


@pytest.fixture(scope="module")
def cine_run(tmp_path_factory):
    """Six phantom patients as ACDC h5 frames; a tiny BMT-CTL run on them."""
    from SemiSupCardiacSegLib.training import Trainer

    data = write_cine_frames(tmp_path_factory.mktemp("acdc"))
    out = tmp_path_factory.mktemp("cine_run")
    result = Trainer({**CINE_TINY, "data": str(data)}, out, device="cpu", progress=False).run()
    return data, out, result


def test_bmtctl_trains_on_cine_phantoms(cine_run):
    _, out, result = cine_run
    assert result["iterations"] == CINE_TINY["iterations"]
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    seg = [r["loss_seg"] for r in logs if "loss_seg" in r]
    assert np.mean(seg[-10:]) < 0.8 * np.mean(seg[:10])  # the supervised loss falls
    assert all("loss_guidance" in r and "loss_adv" in r for r in logs if "loss_seg" in r)


def test_segment_cine_h5_keeps_array_order_and_acdc_labels(cine_run, tmp_path):
    from SemiSupCardiacSegLib.cli import main

    data, out, _ = cine_run
    case = data / "patient005_frame01.h5"
    assert (
        main(
            [
                "segment",
                str(case),
                "--model",
                str(out / "model.pt"),
                "--out",
                str(tmp_path / "seg"),
                "--mc-samples",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "seg" / "segmentation.nrrd")))
    with h5py.File(case) as f:
        ref = f["label"][()]
    assert seg.shape == ref.shape == (6, 80, 96)  # non-square slices: a swapped H/W would show
    assert set(np.unique(seg)) <= {0, 1, 2, 3}
    # The heart is found where it is (a 60-iteration model is rough; the class values are ACDC's).
    assert dice(seg > 0, ref > 0) > 0.5
    report = json.loads((tmp_path / "seg" / "report.json").read_text())
    assert set(report["structures"]) == {"right ventricle", "myocardium", "left ventricle"}


def test_model_dimension_mismatches_are_named(cine_run, tmp_path, capsys):
    """A 3D volume given to a cine (2D) model, and a single 2D slice given to a 3D model."""
    from SemiSupCardiacSegLib.cli import main
    from SemiSupCardiacSegLib.io import write_volume
    from SemiSupCardiacSegLib.phantoms import make_la_phantom
    from SemiSupCardiacSegLib.volume import Volume

    _, out, _ = cine_run
    la = make_la_phantom(shape=(64, 64, 60), spacing=(1.0, 1.0, 1.0))
    write_volume(Volume(la.image, la.spacing), tmp_path / "la.nrrd")
    assert (
        main(
            [
                "segment",
                str(tmp_path / "la.nrrd"),
                "--model",
                str(out / "model.pt"),
                "--out",
                str(tmp_path / "o"),
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2D cine model" in err[0] and "60 slices" in err[0]
    sitk.WriteImage(
        sitk.GetImageFromArray(np.random.default_rng(0).random((32, 32)).astype(np.float32)),
        str(tmp_path / "slice.nrrd"),
    )
    assert main(["segment", str(tmp_path / "slice.nrrd"), "--out", str(tmp_path / "o2"), "--quiet"]) == 2
    assert "expected a 3D image, got 2D" in capsys.readouterr().err
    # An output path that cannot be a folder: one line, exit 2, no traceback.
    (tmp_path / "afile").write_text("x")
    ph = make_cine_phantom(0, "ED", shape=(64, 64, 6))
    write_volume(Volume(ph.image, ph.spacing), tmp_path / "cine.nrrd")
    assert (
        main(
            [
                "segment",
                str(tmp_path / "cine.nrrd"),
                "--model",
                str(out / "model.pt"),
                "--out",
                str(tmp_path / "afile" / "out"),
                "--quiet",
                "--mc-samples",
                "1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    # Head-only MC dropout needs a V-Net: asked of the cine U-Net, one line naming the network.
    assert (
        main(
            [
                "segment",
                str(tmp_path / "cine.nrrd"),
                "--model",
                str(out / "model.pt"),
                "--out",
                str(tmp_path / "o3"),
                "--quiet",
                "--mc-samples",
                "2",
                "--mc-scope",
                "head",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "UNet2D" in err[0] and "decoder" in err[0]
    assert not (tmp_path / "o3" / "segmentation.nrrd").exists()
