"""Batch `segment` under load: N real LA cases in a row through one process (the model loaded once),
peak memory per case, to show it stays flat (no growth from case to case).

    python benchmarks/batch_memory.py [--profile cpu-small] [--cases 20] [--model la] [--smoke]

The cases are the first N of LA2018's train.list (from ../shared/data/LA2018, linked into a
temporary folder, never copied into the repository); ``--smoke`` uses three small phantoms and
writes nothing. The batch runs as ``python -m SemiSupCardiacSegLib segment FOLDER --out OUT`` with
default settings (10 MC samples, the model's flip TTA) in a child process whose ``segment_case`` is
wrapped to record, per case: its peak RSS (VmHWM, reset before the case through
/proc/self/clear_refs, so each case's peak is its own), the RSS left after it (VmRSS), and its
seconds. Growth = the slope of a straight line through the peaks (MB per case), and the last
case's peak against the first's.

Writes benchmarks/results/<profile>/batch_memory.json and .md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, benchmark_parser, publish

LA_DIR = ROOT.parent / "shared" / "data" / "LA2018"

CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from SemiSupCardiacSegLib import cli

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return None

def reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False

records = []
real = cli.segment_case
def measured(model, meta, args, inputs, out, update, **kwargs):
    rss_before = status("VmRSS")
    reset = reset_peak()
    t0 = time.perf_counter()
    report, seconds = real(model, meta, args, inputs, out, update, **kwargs)
    records.append({{"case": out.name, "shape": list(inputs["volume"].shape),
                     "seconds": round(time.perf_counter() - t0, 2),
                     "inference_s": round(seconds, 2), "rss_before_mb": round(rss_before, 1),
                     "peak_mb": round(status("VmHWM"), 1), "rss_after_mb": round(status("VmRSS"), 1),
                     "peak_reset": reset,
                     "volume_ml": {{n: round(s["volume_ml"], 2) for n, s in report["structures"].items()}}}})
    print("RECORD " + json.dumps(records[-1]), flush=True)  # per case: a run cut short keeps what it measured
    return report, seconds
cli.segment_case = measured
code = cli.main(sys.argv[1:])
print("RECORDS " + json.dumps({{"code": code, "records": records}}), flush=True)
"""


def _slope(ys: list[float]) -> float:
    n = len(ys)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, sum(ys) / n
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))


def main() -> int:
    p = benchmark_parser(__doc__, "three phantom cases with a tiny model-free check; writes nothing")
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--model", default="la")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="batch_memory-") as tmp:
        tmp = Path(tmp)
        inp = tmp / "cases"
        inp.mkdir()
        if args.smoke:
            from SemiSupCardiacSegLib.io import write_volume
            from SemiSupCardiacSegLib.phantoms import make_la_phantom
            from SemiSupCardiacSegLib.volume import Volume

            for i in range(3):
                ph = make_la_phantom(shape=(96, 96, 48), seed=i)
                write_volume(Volume(ph.image, ph.spacing), inp / f"phantom{i}.nrrd")
            extra = ["--mc-samples", "1", "--no-tta"]
        else:
            if not (LA_DIR / "train.list").is_file():
                print(f"error: the real LA2018 data is not at {LA_DIR} (kept outside the repository)", file=sys.stderr)
                return 2
            names = [ln.strip() for ln in (LA_DIR / "train.list").read_text().splitlines() if ln.strip()][: args.cases]
            for name in names:
                (inp / f"{name}.h5").symlink_to(LA_DIR / "train" / f"{name}.h5")
            extra = []
        argv = [
            sys.executable,
            "-c",
            CHILD.format(root=str(ROOT)),
            "segment",
            str(inp),
            "--out",
            str(tmp / "out"),
            "--model",
            args.model,
            "--device",
            "cpu",
            "--threads",
            str(args.threads),
            "--quiet",
            *extra,
        ]
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RECORDS ")]
        records = [json.loads(ln[len("RECORD ") :]) for ln in proc.stdout.splitlines() if ln.startswith("RECORD ")]
        if not records:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        data = json.loads(lines[-1][len("RECORDS ") :]) if lines else {"code": proc.returncode, "records": records}
        summary = json.loads((tmp / "out" / "summary.json").read_text())
    records = data["records"]
    peaks = [r["peak_mb"] for r in records]
    after = [r["rss_after_mb"] for r in records]
    rows = {f"{i + 1:02d} {r['case']}": r for i, r in enumerate(records)}
    rows["_summary"] = {
        "cases": len(records),
        "exit_code": data["code"],
        "failed": summary["n_failed"],
        "peak_mb_first": peaks[0] if peaks else None,
        "peak_mb_last": peaks[-1] if peaks else None,
        "peak_mb_min": min(peaks) if peaks else None,
        "peak_mb_max": max(peaks) if peaks else None,
        "peak_slope_mb_per_case": round(_slope(peaks), 2),
        "rss_after_slope_mb_per_case": round(_slope(after), 2),
        "rss_after_first_mb": after[0] if after else None,
        "rss_after_last_mb": after[-1] if after else None,
        "seconds_per_case_mean": round(sum(r["seconds"] for r in records) / max(1, len(records)), 2),
        "settings": "segment defaults: 10 MC samples, the model's flip TTA, overlap 0.5",
    }
    if args.smoke:
        print(json.dumps(rows["_summary"]))
        return 0 if data["code"] == 0 and len(records) == 3 else 1
    s = rows["_summary"]
    publish(
        args.profile,
        "batch_memory",
        rows,
        ["#", "case", "grid", "seconds", "peak RSS (MB)", "RSS after (MB)", "LA (mL)"],
        lambda k, r: (
            None
            if k.startswith("_")
            else [
                k.split()[0],
                r["case"],
                " x ".join(map(str, r["shape"])),
                f"{r['seconds']:.1f}",
                f"{r['peak_mb']:.0f}",
                f"{r['rss_after_mb']:.0f}",
                ", ".join(f"{v:.1f}" for v in r["volume_ml"].values()),
            ]
        ),
        [
            "",
            f"{s['cases']} real LA cases in one `segment FOLDER` batch ({s['settings']}; model `{args.model}`, "
            f"{args.threads} threads), exit code {s['exit_code']}, {s['failed']} failed. Peak RSS per case "
            f"(VmHWM reset before each case): first {s['peak_mb_first']:.0f} MB, last {s['peak_mb_last']:.0f} MB, "
            f"range {s['peak_mb_min']:.0f}-{s['peak_mb_max']:.0f} MB, trend {s['peak_slope_mb_per_case']:+.1f} MB "
            f"per case; RSS left after a case: {s['rss_after_first_mb']:.0f} -> {s['rss_after_last_mb']:.0f} MB "
            f"(trend {s['rss_after_slope_mb_per_case']:+.1f} MB per case). Mean {s['seconds_per_case_mean']:.1f} s "
            "per case, outputs written included. The peak varies with the case's grid (X in 148-244).",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
