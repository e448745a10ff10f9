"""Collect every benchmark result into benchmarks/RESULTS.md, summary first: a short summary (the
shipped models' held-out figures from their cards in models/, the methods table's headline, the
inference-speed headline), then one section per topic (accuracy, methods comparison, uncertainty
quality, speed, memory), each benchmark's table with the exact command, the commit it measured and
that commit's date, hardware and, where recorded, wall time; PNG plots linked in their topic.

    python benchmarks/make_results.py
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from common import ROOT

RESULTS = ROOT / "benchmarks" / "results"
MODEL_CARDS = ROOT / "models"
NOT_RECORDED = "commit not recorded"

# topic -> (what it answers, benchmark result names in the order shown, plot name prefixes)
TOPICS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "Accuracy": (
        "the cardiac indices derived from the cine model and what the LA model's worst cases share (the "
        "shipped models' held-out tables open this page)",
        ("cine_indices", "la_contrast"),
        (),
    ),
    "Methods comparison": (
        "every method at a small CPU budget, with the supervised lower and all-labeled upper bounds",
        (
            "method_comparison_la",
            "method_comparison_la_3000it",
            "method_comparison_cine",
            "method_comparison_cine_3000it",
        ),
        ("method_comparison",),
    ),
    "Learning from corrections": (
        "the segment - correct - fine-tune loop simulated on real LA cases: what K corrected cases buy, "
        "chosen by suggest or at random, and what the heatmap saves the reviewer",
        ("correction_loop",),
        ("correction_loop",),
    ),
    "Uncertainty quality": (
        "whether the heatmap points at the errors: calibration, error overlap, per-case ranking",
        (
            "uncertainty_quality",
            "uncertainty_quality_cine",
            "uncertainty_quality_mc_head",
            "uncertainty_by_method_la",
            "uncertainty_by_method_cine",
        ),
        ("reliability", "uncertainty_vs_dice"),
    ),
    "Speed": (
        "inference end to end, signed distance maps, training iterations and the training loop",
        ("inference_speed", "inference_speed_cine", "sdm_speed", "train_speed", "loop_throughput"),
        ("inference_speed", "train_speed"),
    ),
    "Memory": ("resident memory over a batch of real cases in one process", ("batch_memory",), ()),
}
# Benchmarks whose JSON merges rows from several invocations: only the last one's command and commit are stored.
MERGED_ROWS = ("method_comparison", "uncertainty_by_method", "correction_loop")
SPEED_HEADLINE_PATHS = ("(a) ", "(c) encoder once", "(c) head-only", "segment default:")


def commit_date(commit: str | None) -> str:
    """YYYY-MM-DD of ``commit`` from git, or '' when it is unknown (no commit, no git, not in history)."""
    if not commit:
        return ""
    try:
        out = subprocess.run(
            ["git", "show", "-s", "--format=%cs", commit], cwd=ROOT, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def commit_of_text(path: Path, text: str) -> tuple[str, str]:
    """(short commit, date) of the last git commit that added or removed ``text`` in ``path`` (git's
    pickaxe, so later edits elsewhere in the file do not count); ('', '') when unknown."""
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%h %cs", f"-S{text}", "--", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return "", ""
    parts = out.stdout.split()
    return (parts[0], parts[1]) if out.returncode == 0 and len(parts) == 2 else ("", "")


def provenance(data: dict) -> str:
    """'`command` at commit `X` (YYYY-MM-DD); hardware; torch' of one benchmark result."""
    env = data.get("environment", {})
    commit = env.get("commit")
    date = commit_date(commit)
    at = f"at commit `{commit}`" + (f" ({date})" if date else "") if commit else f"({NOT_RECORDED})"
    hw = f"{env.get('cpu_count')} CPU cores ({env.get('cpu')}), {env.get('torch_threads')} torch threads" + (
        f", GPU {env['gpu']}" if env.get("gpu") else ", no GPU"
    )
    return f"`{data.get('command', '?')}` {at}; {hw}; torch {env.get('torch')}."


def section(json_path: Path) -> list[str]:
    """One benchmark's heading, provenance, wall time and table (its .md beside the JSON), then the
    findings written about it by hand (``<name>.findings.md`` beside it, where there is one: what a
    table's numbers mean, e.g. whether a method's loss is a defect or the regime, and the control
    that shows it), under their own heading so they are not read as generated figures."""
    data = json.loads(json_path.read_text())
    md = json_path.with_suffix(".md")
    table = md.read_text().strip() if md.exists() else ""
    findings = json_path.with_suffix(".findings.md")
    if findings.exists():
        table += "\n\n**Findings** (written by hand, from the runs above):\n\n" + findings.read_text().strip()
    lines = [f"### {data.get('benchmark', json_path.stem)}", "", provenance(data), ""]
    if json_path.stem.startswith(MERGED_ROWS):
        lines += [
            "Rows from several invocations, merged: the command and commit above are the last invocation's; "
            f"rows that invocation did not re-measure do not record theirs ({NOT_RECORDED}).",
            "",
        ]
    walls = (
        [data["wall_s"]]
        if data.get("wall_s")
        else [r.get("wall_s") for r in data.get("results", {}).values() if isinstance(r, dict) and r.get("wall_s")]
    )
    if walls:
        lines += [f"Wall time: {sum(walls) / 60:.1f} min in all.", ""]
    return lines + [table, ""]


def card_held_out(card: Path) -> tuple[str, list[str], list[list[str]]]:
    """(protocol sentence, header, rows) of the first table under a model card's '## Held-out evaluation'."""
    lines = card.read_text().splitlines()
    try:
        i = next(n for n, line in enumerate(lines) if line.startswith("## Held-out evaluation"))
    except StopIteration:
        return "", [], []
    body = lines[i + 1 :]
    protocol = next((line for line in body if line.strip() and not line.startswith("|")), "")
    table = []
    for line in body[next((n for n, line in enumerate(body) if line.startswith("|")), len(body)) :]:
        if not line.startswith("|"):
            break
        table.append([c.strip() for c in line.strip().strip("|").split("|")])
    if len(table) < 3:
        return protocol, [], []
    return protocol, table[0], table[2:]


def shipped_models_summary() -> list[str]:
    """Summary table of the shipped models' held-out Dice and HD95 per structure, from models/*.md."""
    rows = []
    for card in sorted(MODEL_CARDS.glob("*.md")):
        protocol, header, cells = card_held_out(card)
        if not header:
            continue
        col = {name: header.index(name) for name in header}
        hd95 = next((h for h in header if h.startswith("HD95")), None)
        n_cases = re.search(r"on the (\d+) held-out cases", protocol)
        mc = re.search(r"MC samples (\d+)", protocol)
        commit, date = commit_of_text(card, "| " + " | ".join(cells[0]) + " |")
        for c in cells:
            rows.append(
                f"| [`{card.stem}.pt`](../models/{card.name}) | {c[0]} | {c[col['Dice']]} | "
                + (f"{c[col[hd95]]} ({hd95.split()[-1]})" if hd95 else "-")
                + f" | {n_cases.group(1) if n_cases else '?'} | {mc.group(1) if mc else '?'} | "
                + (f"`{commit}` ({date})" if commit else NOT_RECORDED)
                + " |"
            )
    if not rows:
        return []
    return [
        "Shipped models on their held-out cases (`python -m SemiSupCardiacSegLib evaluate`, on the input grid; "
        "mean ± std over cases; protocol and per-case figures in each model card; the commit is the one that "
        "wrote the table into the card, the evaluation's own commit is not recorded):",
        "",
        "| model | structure | Dice | HD95 | held-out cases | MC samples | table commit (date) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def shipped_models_section() -> list[str]:
    """Each model card's held-out protocol and table, verbatim, with the commit that wrote the table."""
    lines = []
    for card in sorted(MODEL_CARDS.glob("*.md")):
        protocol, header, cells = card_held_out(card)
        if not header:
            continue
        commit, date = commit_of_text(card, "| " + " | ".join(cells[0]) + " |")
        written = f"table written at commit `{commit}` ({date})" if commit else NOT_RECORDED
        lines += [
            f"### {card.stem}",
            "",
            f"From [`models/{card.name}`](../models/{card.name}) ({written}; the evaluation's own commit is "
            f"not recorded): {protocol}",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(c) + " |" for c in cells),
            "",
        ]
    return lines


def methods_headline(json_path: Path) -> list[str]:
    """Pivot of a method_comparison result's summary: one row per labeled count, one column per method
    (controls left out), cells 'mean Dice ± seed spread (gain recovered)'."""
    data = json.loads(json_path.read_text())
    results = data.get("results", {})
    summary = results.get("_summary", {})
    method_of = {r["variant"]: r["method"] for r in results.values() if isinstance(r, dict) and "variant" in r}
    shown = [v for v in dict.fromkeys(s["variant"] for s in summary.values()) if method_of.get(v) == v]
    shown = ["supervised"] + sorted(v for v in shown if v != "supervised")
    upper = [s for s in summary.values() if s["variant"] == "supervised_all"]
    counts = sorted({s["labeled"] for s in summary.values() if s["variant"] != "supervised_all"})
    if not counts:
        return []

    def cell(s: dict | None) -> str:
        if s is None:
            return "-"
        text = (
            f"{s['dice_mean']:.3f} ± {s['dice_seed_std']:.3f}"
            if s.get("dice_seed_std") is not None
            else (f"{s['dice_mean']:.3f}")
        )
        gain = s.get("gain_recovered")
        return text + (f" ({gain:.2f})" if gain is not None and s["variant"] != "supervised" else "")

    by_key = {(s["variant"], s["labeled"]): s for s in summary.values()}
    up = f"all {upper[0]['labeled']} labeled (upper)" if upper else "all labeled (upper)"
    unit = "labeled frames (2 per patient)" if "cine" in json_path.stem else "labeled cases"
    header = [unit, "supervised (lower)", *shown[1:], up]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for n in counts:
        cells = [cell(by_key.get((v, n))) for v in shown] + [cell(upper[0]) if upper else "-"]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    n_seeds = sorted({s.get("n_seeds") for s in summary.values() if s["variant"] in shown + ["supervised_all"]})
    return [
        f"**{data.get('benchmark', json_path.stem)}** ({'/'.join(str(s) for s in n_seeds)} seeds per row; "
        f"{provenance(data)[:-1]}; merged rows, see the section below):",
        "",
        *lines,
        "",
    ]


def speed_headline(json_path: Path) -> list[str]:
    """The inference paths a user meets (plain pass, default MC, segment's default, head-only MC) per input."""
    data = json.loads(json_path.read_text())
    rows = [
        (k.split(" | ", 1), v)
        for k, v in data.get("results", {}).items()
        if " | " in k and k.split(" | ", 1)[1].startswith(SPEED_HEADLINE_PATHS)
    ]
    if not rows:
        return []
    return [
        f"Inference end to end with the shipped LA model, best of 3 ({provenance(data)[:-1]}):",
        "",
        "| input | path | seconds | ratio to (a) | peak RSS MB |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {path} | {v['seconds']:.2f} | {v['ratio_to_a']:.2f} | {v['peak_rss_mb']:.0f} |"
            for (name, path), v in rows
        ),
        "",
    ]


def summary(profile: Path) -> list[str]:
    """The summary at the top of one profile's part of RESULTS.md (its methods and speed headlines;
    none where it has neither)."""
    lines: list[str] = []
    for name in ("method_comparison_la", "method_comparison_cine"):
        if (profile / f"{name}.json").exists():
            if name == "method_comparison_la":
                lines += [
                    "Methods at a small CPU budget (600 iterations per run; held-out mean Dice ± spread over seeds; "
                    "in brackets the gain recovered, (method - lower) / (upper - lower)):",
                    "",
                ]
            lines += methods_headline(profile / f"{name}.json")
    if (profile / "inference_speed.json").exists():
        lines += speed_headline(profile / "inference_speed.json")
    return ["## Summary", ""] + lines if lines else []


def topic_of_plot(stem: str) -> str:
    """The topic a PNG belongs to, by its name's prefix; 'Other results' when none claims it."""
    return next((t for t, (_, _, prefixes) in TOPICS.items() if stem.startswith(prefixes)), "Other results")


def speed_bars(profile: Path) -> None:
    """Bar charts of the measured speeds (train_speed.png; inference_speed.png by ``inference_bars``) from
    the JSON results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from SemiSupCardiacSegLib.atomic import atomic_path

    charts = []
    train = profile / "train_speed.json"
    if train.exists():
        rows = json.loads(train.read_text())["results"]
        charts.append(
            ("train_speed.png", "seconds per training iteration", {k: v["median_s_per_it"] for k, v in rows.items()})
        )
    infer = profile / "inference_speed.json"
    if infer.exists():
        rows = json.loads(infer.read_text())["results"]
        inference_bars(rows, profile / "inference_speed.png")
        before_after_bars(rows.get("_details", {}).get("before_after"), profile / "inference_speed_before_after.png")
    for name, label, values in charts:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(values) + 1.2))
        ax.barh(list(values)[::-1], list(values.values())[::-1], color="#4c72b0")
        ax.set_xlabel(label)
        ax.tick_params(axis="y", labelsize=7)
        fig.tight_layout()
        with atomic_path(profile / name) as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)


def before_after_bars(before_after: dict | None, out: Path) -> bool:
    """inference_speed_before_after.png: ``segment`` end to end per input, the earlier commit's bar
    beside this one's, speed-up written beside each pair. False (nothing drawn) without the rows."""
    if not before_after or not before_after.get("inputs"):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from SemiSupCardiacSegLib.atomic import atomic_path

    names = list(before_after["inputs"])
    rows = [before_after["inputs"][n] for n in names]
    fig, ax = plt.subplots(figsize=(9, 0.9 * len(names) + 1.2))
    ys = range(len(names))
    before = [r["before"]["seconds"] for r in rows]
    after = [r["after"]["seconds"] for r in rows]
    ax.barh(
        [y + 0.2 for y in ys], before, height=0.4, color="#c44e52", label=f"before ({before_after['before_commit']})"
    )
    ax.barh([y - 0.2 for y in ys], after, height=0.4, color="#4c72b0", label="after")
    for y, r in zip(ys, rows):
        ax.text(r["before"]["seconds"], y + 0.2, f" {r['ratio_before_to_after']:.1f}x faster", va="center", fontsize=7)
    ax.set_yticks(list(ys), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, max(before + after) * 1.25)
    ax.set_xlabel("seconds, `segment` end to end with its defaults (N = 10, flip TTA), 2 CPU threads")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return True


def inference_bars(rows: dict, out: Path, target_ratio: float = 1.5, la_target_s: float = 5.0) -> list[str]:
    """inference_speed.png: one panel per input (each its own seconds axis), a bar per path with its
    ratio to the deterministic pass (a) written beside it, and the issue's targets as lines ((c)/(a)
    <= 1.5; an LA volume with N = 10 in <= 5 s on 2 CPU cores). Returns the panels' inputs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from SemiSupCardiacSegLib.atomic import atomic_path

    by_input: dict[str, dict] = {}
    for key, v in rows.items():
        if not key.startswith("_") and " | " in key:
            name, path = key.split(" | ", 1)
            by_input.setdefault(name, {})[path] = v
    if not by_input:
        return []
    n = max(len(v) for v in by_input.values())
    fig, axes = plt.subplots(len(by_input), 1, figsize=(11, (0.32 * n + 0.9) * len(by_input)), squeeze=False)
    for ax, (name, paths) in zip(axes[:, 0], by_input.items()):
        labels, secs = list(paths)[::-1], [v["seconds"] for v in paths.values()][::-1]
        ax.barh(labels, secs, color="#4c72b0")
        for y, (lab, sec) in enumerate(zip(labels, secs)):
            ax.text(sec, y, f" {paths[lab]['ratio_to_a']:.2f}x", va="center", fontsize=7)
        base = next((v["seconds"] for k, v in paths.items() if k.startswith("(a)")), None)
        if base:
            ax.axvline(
                target_ratio * base, color="#c44e52", ls=":", lw=1, label=f"{target_ratio}x (a): the target for (c)"
            )
        if name.startswith("real LA case"):
            ax.axvline(
                la_target_s,
                color="#55a868",
                ls="--",
                lw=1,
                label=f"{la_target_s:g} s: the target for N=10 on an LA volume",
            )
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title(name, fontsize=9)
        ax.set_xlim(0, max(secs + [la_target_s if name.startswith("real LA case") else 0]) * 1.15)
        ax.tick_params(axis="y", labelsize=7)
    axes[-1, 0].set_xlabel("seconds, end to end (ratio to (a) beside each bar)")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return list(by_input)


def main() -> int:
    from SemiSupCardiacSegLib.atomic import atomic_write_text

    out = [
        "# Benchmark results",
        "",
        "Generated by `python benchmarks/make_results.py` from `benchmarks/results/<profile>/*.json` and the "
        "model cards in `models/`; how to run each benchmark and what it measures: "
        "[`docs/benchmarks.md`](../docs/benchmarks.md). Figures are measurements of the commit named beside "
        "them, not targets; a date is that commit's date.",
        "",
    ]
    # the shipped models belong to no benchmark profile: their tables once, before the profiles
    out += ["# Shipped models", ""] + shipped_models_summary() + shipped_models_section()
    for profile in sorted(p for p in RESULTS.iterdir() if p.is_dir()):
        out += [f"# Profile `{profile.name}`", ""] + summary(profile)
        speed_bars(profile)
        results = {j.stem: j for j in sorted(profile.glob("*.json"))}
        plots = sorted(profile.glob("*.png"))
        placed = {name for _, names, _ in TOPICS.values() for name in names}
        topics = dict(TOPICS)
        others = tuple(name for name in results if name not in placed)
        if others or any(topic_of_plot(p.stem) == "Other results" for p in plots):
            topics["Other results"] = ("benchmarks not sorted into a topic", others, ())
        for topic, (what, names, _) in topics.items():
            body = []
            for name in names:
                if name in results:
                    body += section(results[name])
            body += [f"![{p.stem}](results/{profile.name}/{p.name})\n" for p in plots if topic_of_plot(p.stem) == topic]
            if body:
                out += [f"## {topic}", "", f"{what[0].upper()}{what[1:]}.", ""] + body
    atomic_write_text(ROOT / "benchmarks" / "RESULTS.md", "\n".join(out))
    print(ROOT / "benchmarks" / "RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
