"""Human-readable tables of results ``{task: {metric: value}}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def format_results(results: Mapping[str, Mapping[str, Any]], *, title: str | None = None) -> str:
    """One line per task, ``metric value`` pairs; Δm (if present) on its own line."""
    lines = [title] if title else []
    width = max((len(t) for t in results), default=4)
    for task, metrics in results.items():
        if task == "multitask":
            continue
        cells = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        lines.append(f"{task:<{width}}  {cells}")
    if "multitask" in results:
        lines.append(f"{'Δm':<{width}}  {results['multitask']['delta_m']:+.2f} %")
    return "\n".join(lines)


def markdown_table(
    rows: Mapping[str, Mapping[str, Mapping[str, float]]], columns: list[tuple[str, str]]
) -> str:
    """A markdown table: one row per model, ``columns`` as (task, metric) pairs, plus Δm when present."""
    has_delta = any("multitask" in r for r in rows.values())
    header = ["model", *[f"{t} {m}" for t, m in columns]] + (["Δm %"] if has_delta else [])
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, res in rows.items():
        cells = [name] + [f"{res[t][m]:.4g}" if t in res and m in res[t] else "–" for t, m in columns]
        if has_delta:
            cells.append(f"{res['multitask']['delta_m']:+.2f}" if "multitask" in res else "–")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)
