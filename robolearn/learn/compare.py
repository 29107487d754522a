"""`robolearn compare RUN... --randomization train --randomization wide`: policies side by side.

Every run is evaluated with the same episodes (same seeds, so the same commands, start states and randomization
draws) under every named randomization; the first run is the reference (the teacher) for the retention
columns. With a baseline (`--baseline LABEL`, e.g. the blind PPO policy) every row also holds the paired
per-episode difference to the baseline's run under the same randomization, and its 95% confidence interval: the
episodes are the same, so terrain, command and randomization draws cancel out of the difference. Writes
compare_<task>_<date>.{json,md,png}: the table, and bars of return and survival (with 95% intervals) per run and
randomization.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any

from robolearn.errors import RobolearnError
from robolearn.learn.eval_run import ci95

__all__ = ["check_baseline", "comparison_rows", "summary_table", "fitted_tables", "write_comparison"]

METRICS = ("mean_return", "mean_return_ci95", "survival", "survival_ci95", "lin_vel_x_error", "terrain_level")


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def _per_episode(report: dict[str, Any]) -> dict[str, list[float]]:
    episodes = report["per_episode"]
    return {"mean_return": [e["episode_return"] for e in episodes],
            "survival": [float(e["survived"]) for e in episodes]}


def check_baseline(baseline: str | None, labels: list[str]) -> None:
    """A clear error when `baseline` (a label) is none of the runs' `labels`."""
    if baseline is not None and baseline not in labels:
        raise RobolearnError(f"--baseline {baseline!r} is not one of the runs' labels: {', '.join(labels)}")


def comparison_rows(reports: list[dict[str, Any]], labels: list[str], baseline: str | None = None
                    ) -> list[dict[str, Any]]:
    """One row per (run, randomization): metrics and retention vs the first run under the same randomization,
    and with `baseline` (a label) the paired per-episode difference to that run: `<metric>_vs_baseline` (mean)
    and `<metric>_vs_baseline_ci95`."""
    reference = {r["randomization"]: r["summary"] for r in reports if r["run"] == reports[0]["run"]}
    check_baseline(baseline, labels)
    base = {r["randomization"]: _per_episode(r) for r, lab in zip(reports, labels, strict=True) if lab == baseline}
    rows = []
    for report, label in zip(reports, labels, strict=True):
        s, ref = report["summary"], reference[report["randomization"]]
        row = {"policy": label, "kind": report["policy"], "history": report["history"],
               "randomization": report["randomization"], "episodes": report["episodes"]}
        row.update({k: _round(s[k]) for k in METRICS if k in s})
        for key in ("mean_return", "survival"):
            row[f"{key}_vs_ref"] = round(s[key] / ref[key], 4) if ref[key] else None
        if baseline is not None:
            ours, theirs = _per_episode(report), base[report["randomization"]]
            if len(ours["survival"]) != len(theirs["survival"]):
                raise RobolearnError(f"{label} ran {len(ours['survival'])} episodes, baseline {baseline} "
                                     f"{len(theirs['survival'])}: a paired difference needs the same episodes")
            for key in ("mean_return", "survival"):
                diff = [a - b for a, b in zip(ours[key], theirs[key], strict=True)]
                row[f"{key}_vs_baseline"] = round(sum(diff) / len(diff), 4)
                row[f"{key}_vs_baseline_ci95"] = _round(ci95(diff))
        rows.append(row)
    return rows


def _pm(row: dict[str, Any], key: str, digits: int, sign: str = "") -> str:
    """`value ± ci95` of row[key] (just the value when the row has no interval); '' when the row lacks key."""
    if row.get(key) is None:
        return ""
    ci = row.get(f"{key}_ci95")
    return f"{row[key]:{sign}.{digits}f}" + ("" if ci is None else f" ± {ci:.{digits}f}")


def summary_table(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The rows as text for people (console and markdown): means with their 95% intervals, retention vs the
    reference and the paired difference to the baseline; every number stays in the JSON."""
    out = []
    for r in rows:
        cells = {"policy": r["policy"], "randomization": r["randomization"], "episodes": str(r["episodes"]),
                 "return": _pm(r, "mean_return", 2), "survival": _pm(r, "survival", 3),
                 "return / ref": f"{r['mean_return_vs_ref']:.3f}" if r["mean_return_vs_ref"] is not None else "",
                 "survival / ref": f"{r['survival_vs_ref']:.3f}" if r["survival_vs_ref"] is not None else ""}
        if "mean_return_vs_baseline" in r:
            cells["return - baseline"] = _pm(r, "mean_return_vs_baseline", 2, "+")
            cells["survival - baseline"] = _pm(r, "survival_vs_baseline", 3, "+")
        if "lin_vel_x_error" in r:
            cells["lin_vel_x_error"] = f"{r['lin_vel_x_error']:.3f}"
        out.append(cells)
    return out


KEY_COLUMNS = ("policy", "randomization")  # repeated in every part of a table split to fit the terminal


def fitted_tables(rows: list[dict[str, str]], title: str, width: int) -> list[Any]:
    """The text rows (summary_table) as rich tables that fit `width` terminal columns with every cell whole: no
    cell is cut or wrapped (headers wrap at spaces); when the columns do not fit side by side they are split into
    several tables, each repeating the policy and randomization columns. The file (markdown) keeps one table."""
    import io
    import textwrap

    from rich import box
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table

    columns = list(dict.fromkeys(k for r in rows for k in r))
    keys = [c for c in columns if c in KEY_COLUMNS]
    rest = [c for c in columns if c not in keys]

    def build(cols: list[str], title_: str) -> Table:
        table = Table(title=title_, box=box.SIMPLE_HEAD, pad_edge=False)
        for c in cols:  # as wide as its widest cell; the header wraps at spaces to that width
            w = max(cell_len(x) for x in [*(r.get(c, "") for r in rows), *c.split()])
            header = "\n".join(textwrap.wrap(c, w, break_long_words=False)) or c
            table.add_column(header, width=w, overflow="fold", justify="left" if c in KEY_COLUMNS else "right")
        for r in rows:
            table.add_row(*(r.get(c, "") for c in cols))
        return table

    measure = Console(width=100_000, file=io.StringIO())  # wide: a measurement is clamped to the console width
    groups: list[list[str]] = [[]]
    for c in rest:
        if groups[-1] and measure.measure(build(keys + groups[-1] + [c], title)).minimum > width:
            groups.append([])
        groups[-1].append(c)
    if len(groups) == 1:
        return [build(keys + groups[0], title)]
    return [build(keys + g, f"{title} ({i + 1}/{len(groups)})") for i, g in enumerate(groups)]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as a markdown table, one column per key (first-seen order), empty cells for missing keys."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join("" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(rows: list[dict[str, Any]], task: str, output: Path, meta: dict[str, Any]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output.mkdir(parents=True, exist_ok=True)
    stem = output / f"compare_{task}_{datetime.datetime.now():%Y%m%d-%H%M%S}"
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md"), stem.with_suffix(".png")]
    paths[0].write_text(json.dumps({**meta, "rows": rows}, indent=2))
    baseline = f"; paired difference to {meta['baseline']}" if meta.get("baseline") else ""
    paths[1].write_text(f"# {task}: policies side by side\n\nMeans with 95% intervals; retention vs the first run"
                        f"{baseline}. Every number: {paths[0].name}.\n\n{markdown_table(summary_table(rows))}")
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    randomizations = list(dict.fromkeys(r["randomization"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(randomizations)
    for ax, key, title in ((axes[0], "mean_return", "episode return"), (axes[1], "survival", "survival")):
        for j, name in enumerate(randomizations):
            mine = [next(r for r in rows if r["policy"] == p and r["randomization"] == name) for p in policies]
            errors = [r.get(f"{key}_ci95") or 0.0 for r in mine]
            bars = ax.bar([i + (j - (len(randomizations) - 1) / 2) * width for i in range(len(policies))],
                          [r[key] for r in mine], width, yerr=errors, capsize=2, label=f"randomization: {name}")
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(range(len(policies)), policies, rotation=15)
        ax.set_title(f"{task}: {title} (95% interval)")
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_ylim(0, 1.1)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)
    return paths
