"""The human-readable table of a complexity report (what ``mtdense complexity`` prints without ``--json``)."""

from __future__ import annotations

from typing import Any


def format_complexity(report: dict[str, Any]) -> str:
    """A human-readable table of :func:`complexity_report`'s result."""
    h, w = report["size"]
    tasks = ", ".join(report["tasks"])
    if report["aux_tasks"]:
        tasks += f" (aux: {', '.join(report['aux_tasks'])})"
    lines = [
        f"{report['model']} on {report['backbone']}: {tasks}",
        f"input 3×{h}×{w}; {report['config']}",
        "",
        f"{'module':<24}{'params (M)':>12}{'GFLOPs':>10}",
    ]
    for name, m in report["per_module"].items():
        lines.append(f"  {name:<22}{m['params'] / 1e6:>12.3f}{m['gflops']:>10.2f}")
    lines.append(f"{'total':<24}{report['params_m']:>12.3f}{report['gflops']:>10.2f}")
    lines.append(f"GMACs per image: {report['gmacs']:.2f} (1 multiply-add = 2 FLOPs)")
    stl = report.get("stl")
    if stl:
        lines += ["", f"single-task models ({', '.join(stl['per_task'])}), same backbone:"]
        for task, s in stl["per_task"].items():
            lines.append(f"  stl {task:<18}{s['params'] / 1e6:>12.3f}{s['gflops']:>10.2f}")
        lines.append(f"{'sum':<24}{stl['params_m']:>12.3f}{stl['gflops']:>10.2f}")
        lines.append(
            f"multi-task / sum of single-task: {stl['params_ratio']:.2f}× params, {stl['gflops_ratio']:.2f}× FLOPs"
        )
    if report.get("train_step_s") is not None:
        layout = "channels_last" if report["channels_last"] else "contiguous"
        layout += ", torch.compile (train.compile)" if report.get("compile") else ""
        lines += [
            "",
            f"timing: batch {report['batch']}, {report['dtype']}, {layout}, {report['threads']} threads, "
            f"median of {report['repeats']}",
            f"  train step  {report['train_step_s']:.3f} s (fastest {report['train_step_min_s']:.3f} s)",
            f"  inference   {report['infer_s']:.3f} s (fastest {report['infer_min_s']:.3f} s)",
        ]
    if report.get("notes"):
        lines += ["", *(f"note: {n}" for n in report["notes"])]
    return "\n".join(lines)
