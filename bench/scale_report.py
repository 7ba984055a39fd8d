"""The scale benchmark's record: rows merged into bench/results/scale.json, the plot beside it and the table printed.

Writes the JSON before the plot, so a missing matplotlib costs the picture and never the numbers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def save(rows: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    old = json.loads(out.read_text()) if out.exists() else []
    fresh = {(r["operator"], r["servings"]) for r in rows}
    merged = [r for r in old if (r["operator"], r["servings"]) not in fresh] + rows
    merged.sort(key=lambda r: (r["operator"], r["servings"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=1) + "\n")
    return merged


def plot(rows: list[dict[str, Any]], out: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print(f"matplotlib is not installed: {out} not drawn (pip install matplotlib)", file=sys.stderr)
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, (times, memory, poll) = plt.subplots(1, 3, figsize=(16, 7))
    colours = {label: plt.cm.tab20(i % 20) for i, label in enumerate(sorted({r["operator"] for r in rows}))}
    for label, colour in colours.items():
        mine = sorted((r for r in rows if r["operator"] == label), key=lambda r: r["servings"])
        for key, limit_key, style, name in (("converge_s", "converge_timeout_s", "-o", "converge"), ("restart_s", "restart_timeout_s", "--s", "restart")):
            drawn = [r for r in mine if not (name == "restart" and (r.get("restart_note") or r.get("restart_timeout_s") is None))]  # not measured (or a floor row): no point
            xs = [r["servings"] for r in drawn]
            ys = [r[key] if r.get(key) is not None else r.get(limit_key) for r in drawn]
            times.plot(xs, ys, style, color=colour)
            for x, y, r in zip(xs, ys, drawn):
                if r.get(key) is None:
                    times.plot([x], [y], "x", color="red", markersize=12)
                    times.annotate(f"{name}: not done in {y:.0f} s", (x, y), textcoords="offset points", xytext=(-115, -14 if name == "converge" else 6), fontsize=7, color="red")
        held = [r for r in mine if r.get("peak_rss_mib") is not None]
        if held:
            memory.plot([r["servings"] for r in held], [r["peak_rss_mib"] for r in held], "-o", color=colour)
        for key, style in (("poll_s", "-o"), ("poll_recorded_s", "--s")):
            polled = [r for r in mine if r.get(key) is not None]
            if polled:
                poll.plot([r["servings"] for r in polled], [r[key] for r in polled], style, color=colour)
    panels = ((times, (120, 60), "converge after create (solid) / restart (dashed)", "seconds"), (memory, (300 / 1.048576,), "operator peak RSS", "MiB"),
              (poll, (2,), "poll cycle: raw, 60 s window (solid) / recording rules, 300 s (dashed)", "seconds"))
    for ax, target, title, unit in panels:
        for t in target:
            ax.axhline(t, color="grey", linestyle=":", linewidth=1)
        if any(len(line.get_xdata()) > 0 and line.get_linestyle() != ":" for line in ax.get_lines()):
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel("SpeculativeServings")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], color=colour, marker="o", label=label) for label, colour in colours.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("specserve at scale (dotted: the targets of issue 12 at 5,000: converge 120 s, restart 60 s, 300 MB, poll 2 s)", fontsize=10)
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(out, dpi=110)


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table, one line per label and N (what bench/README.md shows)."""

    def cell(value: Any, unit: str = "") -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            value = f"{value:,.1f}" if value >= 10 else f"{value:.2f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        return f"{value}{unit}"

    lines = ["| operator | N | converge_s | restart_s | restart_writes (to Deployments + Services) | peak RSS MiB | cpu_s | max asyncio tasks | max loop lag s | poll_s raw / recorded | loadavg at start |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["operator"], r["servings"])):
        converge = cell(r.get("converge_s")) if r.get("converged", True) else f"not in {round(r.get('converge_timeout_s') or 0)}"
        restart = cell(r.get("restart_s")) if r.get("restart_settled", True) else f"not in {round(r.get('restart_timeout_s') or 0)}"
        if r.get("restart_note"):
            restart = "not measured (restart_note)"
        by = r.get("restart_writes_by_resource") or {}
        owned = (by.get("deployments") or 0) + (by.get("services") or 0)
        poll = f"{cell(r.get('poll_s'))} / {cell(r.get('poll_recorded_s'))}"
        lines.append(f"| {r['operator']} | {r['servings']:,} | {converge} | {restart} | {cell(r.get('restart_writes'))} ({cell(owned)}) | {cell(r.get('peak_rss_mib'))} "
                     f"| {cell(r.get('cpu_s'))} | {cell(r.get('max_asyncio_tasks'))} | {cell(r.get('max_loop_lag_s'))} | {poll} | {(r.get('loadavg_before') or ['-'])[0]} |")
    return "\n".join(lines)
