"""Collect every benchmark result into benchmarks/RESULTS.md: per profile, each benchmark's table
with the exact command, commit, hardware and, where recorded, wall time; PNG plots linked.

    python benchmarks/make_results.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from common import ROOT

RESULTS = ROOT / "benchmarks" / "results"


def section(json_path) -> list[str]:
    data = json.loads(json_path.read_text())
    env = data.get("environment", {})
    table = json_path.with_suffix(".md").read_text().strip() if json_path.with_suffix(".md").exists() else ""
    hw = f"{env.get('cpu_count')} CPU cores ({env.get('cpu')}), {env.get('torch_threads')} torch threads" + (
        f", GPU {env['gpu']}" if env.get("gpu") else ", no GPU"
    )
    lines = [
        f"### {data.get('benchmark', json_path.stem)}",
        "",
        f"`{data.get('command', '?')}` at commit `{env.get('commit')}`; {hw}; torch {env.get('torch')}.",
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


def speed_bars(profile: Path) -> None:
    """Bar charts of the measured speeds (train_speed.png; inference_speed.png by ``inference_bars``) from the
    JSON results."""
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
        inference_bars(json.loads(infer.read_text())["results"], profile / "inference_speed.png")
    for name, label, values in charts:
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(values) + 1.2))
        ax.barh(list(values)[::-1], list(values.values())[::-1], color="#4c72b0")
        ax.set_xlabel(label)
        ax.tick_params(axis="y", labelsize=7)
        fig.tight_layout()
        with atomic_path(profile / name) as tmp:
            fig.savefig(tmp, dpi=100)
        plt.close(fig)


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
        "Generated by `python benchmarks/make_results.py` from `benchmarks/results/<profile>/*.json`; "
        "each benchmark's script docstring says what it measures and how. Figures are measurements of the "
        "commit named beside them, not targets.",
        "",
    ]
    for profile in sorted(p for p in RESULTS.iterdir() if p.is_dir()):
        out += [f"## Profile `{profile.name}`", ""]
        speed_bars(profile)
        for j in sorted(profile.glob("*.json")):
            out += section(j)
        for png in sorted(profile.glob("*.png")):
            out += [f"![{png.stem}](results/{profile.name}/{png.name})", ""]
    atomic_write_text(ROOT / "benchmarks" / "RESULTS.md", "\n".join(out))
    print(ROOT / "benchmarks" / "RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
