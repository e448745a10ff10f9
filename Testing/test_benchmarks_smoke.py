"""The benchmark scripts still run (tiny --smoke sizes; they write nothing). Figures live in
benchmarks/results/, never in assertions."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, SHARED

from SemiSupCardiacSegLib.shipped import SHIPPED

#: Benchmarks that only make sense on the real data (kept outside the repository).
NEEDS_REAL_DATA = {"cine_indices.py": SHARED / "data" / "ACDC", "la_contrast.py": SHARED / "data" / "LA2018"}


@pytest.mark.parametrize(
    "script",
    [
        "sdm_speed.py",
        "train_speed.py",
        "inference_speed.py",
        "inference_speed.py --model {cine_model}",
        "loop_throughput.py",
        "uncertainty_quality.py",
        "method_comparison.py --task la",
        "method_comparison.py --task cine",
        "cine_indices.py --model {cine_model}",
        "uncertainty_by_method.py --task la",
        "batch_memory.py",
        "correction_loop.py",
        "correction_loop.py --start adapted",
        "la_contrast.py",
    ],
)
def test_benchmark_smoke(script):
    name, *extra = script.format(cine_model=SHIPPED["cine"].path).split()
    if name in NEEDS_REAL_DATA and not NEEDS_REAL_DATA[name].is_dir():
        pytest.skip(f"{name} needs the real data at {NEEDS_REAL_DATA[name]} (kept outside the repository)")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / name), *extra, "--smoke"],
        cwd=REPO / "benchmarks",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip()


def test_accuracy_table_keeps_earlier_rows_of_the_same_protocol(tmp_path, monkeypatch):
    """Separate method_comparison invocations add up: rows already published with the same iteration
    count are kept, also when their run folder is gone (runs/ does not outlive a session); other
    iteration counts are not. A kept row's learning curve comes from the row, else from its run's log."""
    import json

    sys.path.insert(0, str(REPO / "benchmarks"))
    import method_comparison

    monkeypatch.setattr(method_comparison, "ROOT", tmp_path)
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "model.pt").write_bytes(b"x")
    results = tmp_path / "benchmarks" / "results" / "cpu-small"
    results.mkdir(parents=True)
    rows = {
        "kept": {"iterations": 600, "run": "runs/a"},
        "other length": {"iterations": 20, "run": "runs/a"},
        "vanished": {"iterations": 600, "run": "runs/b"},
        "_summary": {},
    }
    (results / "method_comparison_la.json").write_text(json.dumps({"results": rows}))
    assert sorted(method_comparison.earlier_rows("cpu-small", "la", 600)) == ["kept", "vanished"]
    assert method_comparison.earlier_rows("cpu-small", "cine", 600) == {}
    (tmp_path / "runs" / "a" / "log.jsonl").write_text(
        '{"iteration": 10, "loss_seg": 0.5}\n{"iteration": 20, "step_s": 1}\n'
    )
    assert method_comparison.loss_curve(rows["kept"]) == [[10, 0.5]]
    assert method_comparison.loss_curve(rows["vanished"]) == []
    assert method_comparison.loss_curve({**rows["vanished"], "loss_seg_curve": [[5, 0.7]]}) == [[5, 0.7]]


def test_reused_run_reports_its_training_wall_time(tmp_path):
    """A run reused from an earlier invocation reports the wall time its training took, not the
    instant its reuse took; a run finished before that time was kept reports None, not a guess."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import method_comparison

    calls = []

    def train():
        calls.append(1)
        (tmp_path / "run" / "model.pt").write_bytes(b"x")

    (tmp_path / "run").mkdir()
    first = method_comparison.train_or_reuse(tmp_path / "run", train)
    again = method_comparison.train_or_reuse(tmp_path / "run", train)
    assert calls == [1] and first is not None and again == first
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "model.pt").write_bytes(b"x")
    assert method_comparison.train_or_reuse(tmp_path / "old", train) is None and calls == [1]


def test_uncertainty_table_keeps_rows_whose_runs_are_gone_and_remeasures_new_weights():
    """uncertainty_by_method measures a run when it is here and its row is missing or from other
    weights; keeps a row whose run is gone; drops a row that left the accuracy table."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import uncertainty_by_method

    table = {k: {} for k in ("gone", "same weights", "retrained", "new")}
    earlier = {
        "gone": {"model_id": "a"},
        "same weights": {"model_id": "b"},
        "retrained": {"model_id": "c"},
        "left the table": {"model_id": "d"},
    }
    keep, measure = uncertainty_by_method.plan(table, earlier, {"same weights": "b", "retrained": "c2", "new": "e"})
    assert sorted(keep) == ["gone", "same weights"]
    assert measure == ["retrained", "new"]


def test_per_case_scores_skip_structures_predicted_empty():
    """A structure predicted empty has no score (NaN): the correlation and AUROC are over the others
    (one NaN made the whole column NaN, and the 'best' score an arbitrary pick)."""
    import math

    sys.path.insert(0, str(REPO / "benchmarks"))
    import uncertainty_quality as uq

    dice = [0.95, 0.9, 0.8, 0.6, 0.3, 0.0]
    per_case = {
        str(i): {"dice": d, "score_rank": 1 - d, "score_noise": [0.3, 0.1, 0.5, 0.2, 0.4, math.nan][i]}
        for i, d in enumerate(dice)
    }
    per_case["5"]["score_rank"] = math.nan  # the Dice-0 case: its structure was predicted empty
    q = uq.score_quality(per_case)
    assert q["score_rank"]["n_scored"] == 5 and q["score_rank"]["spearman_vs_1_minus_dice"] == pytest.approx(1.0)
    assert q["score_rank"]["auroc_dice_below_0.85"] == 1.0
    assert uq.best_score(q) == "score_rank"
    assert uq._or_nan(None) != uq._or_nan(None) and uq._or_nan(0.0) == 0.0  # a zero score stays a score


def test_cross_validated_flag_is_judged_on_folds_that_chose_nothing():
    """Each fold's score and threshold come from the other folds alone: a score that tracks Dice wins
    over noise, the threshold flags every training case below 0.85, and a test case is flagged by
    what the other folds chose (not by its own value: a case below 0.85 whose score lies under the
    other folds' threshold stays unflagged)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import uncertainty_quality as uq

    rng = np.random.default_rng(0)
    dice = np.linspace(0.95, 0.70, 24)
    per_case = {
        f"c{i}": {"dice": float(d), "score_good": float(1 - d), "score_noise": float(rng.random())}
        for i, d in enumerate(dice)
    }
    assert uq.flag_all_threshold([0.1, 0.3, 0.2], [False, True, True]) < 0.2 < 0.3
    assert np.isnan(uq.flag_all_threshold([0.1], [False]))
    cv = uq.cross_validate(per_case, 4)
    assert [r["score"] for r in cv["per_fold"]] == ["good"] * 4
    assert cv["mean_spearman_test"] == pytest.approx(1.0)
    assert cv["n_below"] == int((dice < 0.85).sum()) and cv["n_below_flagged"] >= cv["n_below"] - 4
    for name, row in per_case.items():  # flagged exactly by its own fold's (the others') threshold
        t = cv["per_fold"][cv["fold_of"][name]]["threshold"]
        assert cv["out_of_fold_flags"][name] == (row["score_good"] > t)
    # The lowest-scored bad case, held out alone with a fold whose threshold is above its score.
    per_case["c_odd"] = {"dice": 0.80, "score_good": 0.0, "score_noise": 0.5}
    cv = uq.cross_validate(per_case, 25)  # leave one case out
    assert cv["out_of_fold_flags"]["c_odd"] is False and cv["n_below_flagged"] == cv["n_below"] - 1
    with pytest.raises(SystemExit, match="--folds"):
        uq.cross_validate(per_case, 1)


def test_new_scanner_shift_is_fixed_and_keeps_the_anatomy():
    """correction_loop's new-scanner transform: the stated grid, the label's volume kept within 5 %,
    the same volumes on every call (noise seeded by the case name), another contrast."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import correction_loop as cl

    from SemiSupCardiacSegLib.phantoms import make_la_phantom
    from SemiSupCardiacSegLib.volume import Volume

    ph = make_la_phantom(shape=(96, 96, 64), spacing=(0.625, 0.625, 0.625), seed=3)
    image, label = Volume(ph.image, ph.spacing), Volume(ph.label.astype(np.uint8), ph.spacing)
    a, la = cl.shift_case(image, label, "caseA")
    b, lb = cl.shift_case(image, label, "caseA")
    c, _ = cl.shift_case(image, label, "caseB")
    assert a.shape == (48, 48, 16) and np.allclose(a.spacing, cl.SHIFT_SPACING) and la.same_grid(a)
    vol = lambda v: v.array.sum() * np.prod(v.spacing)  # noqa: E731
    assert abs(vol(la) / vol(label) - 1) < 0.05
    assert np.array_equal(a.array, b.array) and np.array_equal(la.array, lb.array)
    assert not np.array_equal(a.array, c.array)  # other noise
    centre = np.asarray(image.origin) + (np.array(image.shape) - 1) / 2 * image.spacing
    assert np.allclose(np.asarray(a.origin) + (np.array(a.shape) - 1) / 2 * a.spacing, centre)


def test_controls_change_only_what_they_name():
    """Each control is its base method's cine config with the named changes: supervised_half* a
    labeled-only batch (and the shared SDM head), sassnet_no_adv SASSNet with a zero adversarial weight."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import method_comparison as mc

    sup, sassnet = mc.method_config("cine", "supervised", None, 14, 1), mc.method_config("cine", "sassnet", None, 14, 1)
    half, shared = (
        mc.method_config("cine", "supervised_half", None, 14, 1),
        mc.method_config("cine", "supervised_half_shared", None, 14, 1),
    )
    no_adv = mc.method_config("cine", "sassnet_no_adv", None, 14, 1)
    assert half["batch_size"] == sup["labeled_per_batch"] < sup["batch_size"] and half["network"] == sup["network"]
    assert shared["network"] == {**sup["network"], "sdm_decoder": "shared"} == sassnet["network"]
    assert no_adv["method"] == "sassnet" and no_adv["method_params"] == {**sassnet["method_params"], "adv_weight": 0.0}
    assert {k: v for k, v in no_adv.items() if k != "method_params"} == {
        k: v for k, v in sassnet.items() if k != "method_params"
    }


@pytest.mark.parametrize("task,method,labeled", [("la", "dtc", 8), ("cine", "bmtctl", 14), ("la", "mtctl", 8)])
def test_no_consistency_controls_only_zero_the_consistency(task, method, labeled):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import method_comparison as mc

    dtc = mc.method_config(task, method, 3000, labeled, 1)
    ctl = mc.method_config(task, f"{method}_no_consistency", 3000, labeled, 1)
    assert ctl["method"] == method and ctl["method_params"] == {**dtc["method_params"], "consistency": 0.0}
    assert {k: v for k, v in ctl.items() if k != "method_params"} == {
        k: v for k, v in dtc.items() if k != "method_params"
    }


def test_bf16_rows_change_only_the_arithmetic_and_are_judged_against_bf16_bounds():
    """``NAME@bf16`` is NAME's config under bf16 autocast (after ``+bcp`` too); every other row is
    pinned to float32; a @bf16 row's gain recovered uses the @bf16 bounds where they were run."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import method_comparison as mc

    plain, low = mc.method_config("cine", "bmtctl", 3000, 14, 1), mc.method_config("cine", "bmtctl@bf16", 3000, 14, 1)
    assert plain["precision"] == "float32" and low["precision"] == "bfloat16"
    assert {k: v for k, v in low.items() if k != "precision"} == {k: v for k, v in plain.items() if k != "precision"}
    both = mc.method_config("la", "sassnet+bcp@bf16", 600, 8, 1)
    assert both["precision"] == "bfloat16" and "copy_paste" in both
    assert mc.method_config("la", "supervised_all@bf16", 600, 8, 1)["labeled"] is None

    def row(variant, dice):
        return {"variant": variant, "labeled": 68 if "all" in variant else 8, "mean": {"x": {"dice": {"mean": dice}}}}

    rows = {
        "a": row("supervised", 0.6),
        "b": row("supervised_all", 0.9),
        "c": row("supervised@bf16", 0.7),
        "d": row("supervised_all@bf16", 0.8),
        "e": row("sassnet@bf16", 0.75),
        "f": row("sassnet", 0.75),
    }
    summary = mc.summarize(rows)
    assert summary["sassnet@bf16 @ 8"]["gain_recovered"] == pytest.approx((0.75 - 0.7) / (0.8 - 0.7))
    assert summary["sassnet @ 8"]["gain_recovered"] == pytest.approx((0.75 - 0.6) / (0.9 - 0.6))
    assert "gain_recovered" not in summary["supervised@bf16 @ 8"]


def test_correction_loop_selections():
    """suggest: the uncertainty ranking (a missing structure first); suggest_found: the same without
    the cases whose structure was not found; randomD: nested in K, one fixed draw per D."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import correction_loop as cl

    def report(score, ml):
        return {"structures": {"left atrium": {"entropy_per_volume": score, "volume_ml": ml, "doubtful": None}}}

    scored = {
        "absent": {"report": report(None, 0.0)},
        "tiny": {"report": report(9.0, 0.4)},
        "doubt": {"report": report(0.8, 30.0)},
        "good": {"report": report(0.2, 40.0)},
        "fine": {"report": report(0.3, 35.0)},
    }
    pool = list(scored)
    assert cl.chosen("suggest", 3, pool, scored, "entropy_per_volume") == ["absent", "tiny", "doubt"]
    assert cl.chosen("suggest_found", 3, pool, scored, "entropy_per_volume") == ["doubt", "fine", "good"]
    r2, r4 = (cl.chosen("random0", k, pool, scored, "entropy_per_volume") for k in (2, 4))
    assert r4[:2] == r2 and len(set(r4)) == 4 and cl.chosen("random1", 4, pool, scored, "entropy_per_volume") != r4


def test_correction_loop_calls_side_by_side(tmp_path):
    """Two calls of correction_loop at once: each merges its row into the JSON on disk (neither
    overwrites the other's), and a row claimed by a live call is not taken; a dead call's claim is."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import correction_loop as cl

    path = tmp_path / "correction_loop.json"
    cl.merged(path, lambda r: r["rows"].__setitem__("a", {"held_out_dice": 0.5}))
    stale = cl.read_result(path)  # what a second call read before the first wrote its next row
    cl.merged(path, lambda r: r["rows"].__setitem__("b", {"held_out_dice": 0.6}))
    cl.merged(path, lambda r: r["rows"].__setitem__("c", {"held_out_dice": 0.7}))
    assert sorted(stale["rows"]) == ["a"] and sorted(cl.read_result(path)["rows"]) == ["a", "b", "c"]
    assert (tmp_path / "correction_loop.md").is_file()

    row_dir = tmp_path / "rows" / "r"
    assert not cl.claim_row(path, "a", row_dir)  # measured already
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        row_dir.mkdir(parents=True)
        (row_dir / "claimed_by_pid").write_text(str(other.pid))
        assert not cl.claim_row(path, "d", row_dir)  # a live call measures it
    finally:
        other.kill()
        other.wait()
    assert cl.claim_row(path, "d", row_dir)  # that call is gone: the row is free again
    assert (row_dir / "claimed_by_pid").read_text() == str(os.getpid())


def test_inference_chart_has_a_panel_per_input(tmp_path):
    """make_results draws inference_speed.png with one panel per input of the table (each its own
    seconds axis), from rows named 'INPUT | PATH'; rows without a path (details) are left out."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import make_results

    rows = {
        f"{name} | {path}": {"seconds": s, "ratio_to_a": r}
        for name, scale in (("real LA case X 10x10x10", 1.0), ("phantom 576x576x88", 20.0))
        for path, s, r in (("(a) deterministic pass", scale, 1.0), ("(c) encoder once", 3.6 * scale, 3.6))
    }
    rows["_details"] = {"seconds": 1.0}
    out = tmp_path / "inference_speed.png"
    assert make_results.inference_bars(rows, out) == ["real LA case X 10x10x10", "phantom 576x576x88"]
    assert out.stat().st_size > 1000
    assert (
        make_results.inference_bars({"_details": {}}, tmp_path / "none.png") == []
        and not (tmp_path / "none.png").exists()
    )


def test_before_after_runs_segment_in_each_tree(tmp_path):
    """inference_speed's before/after times the segment command in the tree it is given (its own
    package on the path): an empty folder fails naming the tree; the same tree twice gives the same
    segmentation. make_results draws the pairs, and nothing without them."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import inference_speed
    import make_results

    from SemiSupCardiacSegLib.io import write_volume
    from SemiSupCardiacSegLib.phantoms import make_la_phantom
    from SemiSupCardiacSegLib.volume import Volume

    ph = make_la_phantom(shape=(48, 40, 24), spacing=(2.0,) * 3, seed=4)
    image = write_volume(Volume(ph.image, ph.spacing), tmp_path / "x.nrrd")
    write_volume(Volume(ph.label, ph.spacing), tmp_path / "x.nrrd.label.nrrd")
    empty = tmp_path / "not_a_checkout"
    empty.mkdir()
    with pytest.raises(RuntimeError, match="not_a_checkout"):
        inference_speed.segment_before_after(image, empty, "la", 1, repeats=1)
    rows = inference_speed.segment_before_after(image, REPO, "la", 1, repeats=1)
    assert rows["before"]["dice"] == rows["after"]["dice"] > 0.3
    assert rows["ratio_before_to_after"] > 0
    out = tmp_path / "before_after.png"
    assert make_results.before_after_bars({"before_commit": "abc", "inputs": {"x": rows}}, out)
    assert out.stat().st_size > 1000
    assert not make_results.before_after_bars(None, tmp_path / "none.png") and not (tmp_path / "none.png").exists()


def test_results_summary_reads_cards_and_method_tables(tmp_path):
    """RESULTS.md's summary: a model card's held-out table is read whole (protocol sentence, header,
    rows), and a method comparison becomes one row per labeled count with a column per method, the
    controls (a variant that is not its own method) left out and the all-labeled bound last."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import json

    import make_results

    card = tmp_path / "m.md"
    card.write_text(
        "# m\n\n## Held-out evaluation (input grid)\n\n`evaluate` on the 3 held-out cases, MC samples 1.\n\n"
        "| structure | Dice | HD95 mm |\n|---|---|---|\n| left atrium | 0.9 ± 0.1 | 4.0 ± 1.0 |\n\n## Notes\n"
    )
    protocol, header, rows = make_results.card_held_out(card)
    assert protocol.startswith("`evaluate` on the 3") and header == ["structure", "Dice", "HD95 mm"]
    assert rows == [["left atrium", "0.9 ± 0.1", "4.0 ± 1.0"]]

    def row(variant, method, labeled, dice, gain=None):
        return {
            "variant": variant,
            "labeled": labeled,
            "n_seeds": 2,
            "dice_mean": dice,
            "dice_seed_std": 0.01,
            "gain_recovered": gain,
        }, {"variant": variant, "method": method}

    rows = [
        row("supervised", "supervised", 8, 0.6),
        row("dtc", "dtc", 8, 0.7, 0.5),
        row("supervised_half", "supervised", 8, 0.5),
        row("supervised_all", "supervised", 68, 0.8),
    ]
    results = {f"{s['variant']} @ {s['labeled']}": run for s, run in rows}
    results["_summary"] = {f"{s['variant']} @ {s['labeled']}": s for s, _ in rows}
    (tmp_path / "method_comparison_la.json").write_text(json.dumps({"benchmark": "mc", "results": results}))
    table = [line for line in make_results.methods_headline(tmp_path / "method_comparison_la.json") if line[:1] == "|"]
    assert table[0] == "| labeled cases | supervised (lower) | dtc | all 68 labeled (upper) |"
    assert table[2] == "| 8 | 0.600 ± 0.010 | 0.700 ± 0.010 (0.50) | 0.800 ± 0.010 |"
    # a profile's summary holds its own headlines only (the shipped models' tables open the page once)
    assert make_results.summary(tmp_path)[:2] == ["## Summary", ""]
    assert "../models/" not in "\n".join(make_results.summary(tmp_path))
    (tmp_path / "bare").mkdir()
    assert make_results.summary(tmp_path / "bare") == []
    # a benchmark's section: its generated table, then the hand-written findings beside it, marked as such
    (tmp_path / "method_comparison_la.md").write_text("| generated |")
    plain = "\n".join(make_results.section(tmp_path / "method_comparison_la.json"))
    assert "| generated |" in plain and "Findings" not in plain
    (tmp_path / "method_comparison_la.findings.md").write_text("DTC shrinks the atrium: the control shows it.\n")
    text = "\n".join(make_results.section(tmp_path / "method_comparison_la.json"))
    assert text.index("| generated |") < text.index("**Findings** (written by hand") < text.index("DTC shrinks")


def test_speed_probe_times_a_fixed_workload():
    """The machine-speed probe recorded with every benchmark result: positive seconds, and part of
    the environment block."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import common

    assert 0 < common.speed_probe(repeats=2) < 60
    assert common.environment()["cpu_probe_s"] > 0


def test_locked_makes_a_second_writer_wait(tmp_path):
    """common.locked, which method_comparison and correction_loop hold while they re-read, merge and
    rewrite a result file: while one process holds it, another process's locked block waits."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import common

    target = tmp_path / "table.json"
    code = (
        f"import sys, time; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import common, pathlib\n"
        f"t = time.time()\nwith common.locked(pathlib.Path({str(target)!r})):\n    print(time.time() - t)"
    )
    with common.locked(target):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        time.sleep(3.0)
        assert proc.poll() is None  # still waiting for the lock
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and float(out) > 1.0
