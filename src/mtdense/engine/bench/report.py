"""The markdown table of a suite's results: one row per reference and method, mean ± std over seeds."""

from __future__ import annotations

from typing import Any


def fmt(stat: dict[str, Any] | None, *, signed: bool = False, digits: int = 4) -> str:
    """``mean ± std`` (``mean`` alone for one seed; ``–`` when absent)."""
    if not stat:
        return "–"
    spec = f"+.{digits}g" if signed else f".{digits}g"
    text = format(stat["mean"], spec)
    return text if stat.get("std") is None else f"{text} ± {format(stat['std'], f'.{digits - 1}g')}"


def columns_of(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(task, primary metric) of every task of the suite, in first-seen order."""
    from mtdense.tasks import TASKS

    tasks: list[str] = []
    for row in (*summary["references"].values(), *summary["methods"].values()):
        tasks += [t for t in row["tasks"] if t not in tasks]
    return [(t, TASKS[t].primary_metric.name) for t in tasks]


def markdown_table(summary: dict[str, Any]) -> str:
    """Rows: references then methods. Columns: each task's primary metric, Δm (%), parameters (M),
    GFLOPs per image, train-step time (s); every value ``mean ± std`` over the seeds."""
    from mtdense.tasks import TASKS

    columns = columns_of(summary)
    arrows = {t: "↓" if TASKS[t].primary_metric.lower_is_better else "↑" for t, _ in columns}
    header = ["model", *[f"{t} {m} {arrows[t]}" for t, m in columns], "Δm % ↑", "params M", "GFLOPs", "step s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in (*summary["references"].items(), *summary["methods"].items()):
        cells = [name]
        cells += [fmt(row["metrics"].get(t, {}).get(m)) for t, m in columns]
        cells.append(fmt(row.get("delta_m"), signed=True, digits=3))
        cells.append(f"{row['params_m']:.3g}" if row.get("params_m") is not None else "–")
        cells.append(f"{row['gflops']:.3g}" if row.get("gflops") is not None else "–")
        cells.append(fmt(row.get("train_step_s"), digits=3))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
