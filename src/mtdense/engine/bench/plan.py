"""Planning a suite: every run it needs, with its fully resolved config and its folder.

Override order (later wins): the config file, the suite's ``overrides``, the entry's ``overrides``, the
command line's ``key=value``, then ``seed=S``. The seed changes the training seed (initialisation, batch
order, augmentation) and nothing else: the dataset stays the one of the config, so the spread over
seeds is the spread of training, not of data. With ``--jobs N > 1`` every run also gets
``train.threads=1`` (N processes with one intra-op thread each).

Layout under OUT: ``stl_<task>/seed<S>/`` for the references, ``<method>/seed<S>/`` for the methods
(``<method>_<task_set>`` for a method expanded over task sets), ``references/seed<S>.json`` (the
references' ``{task: metrics}`` of seed S, the ``eval.baseline`` of that seed's methods).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mtdense.config.derive import single_task_config
from mtdense.config.load import apply_overrides, config_to_dict, read_yaml, resolve_config, validate_config
from mtdense.engine.bench.suite import RunEntry, Suite
from mtdense.errors import ConfigError


@dataclass(frozen=True)
class RunSpec:
    """One training run of a suite."""

    name: str  # row name: "stl_semseg", "mtl", "xtam_sd"
    kind: str  # "reference" or "method"
    seed: int
    config: dict[str, Any]  # fully resolved (config_to_dict of the validated config)
    out: Path  # run folder
    source: str  # where the config comes from, for messages

    @property
    def tasks(self) -> list[str]:
        return list(self.config["data"]["tasks"])

    @property
    def label(self) -> str:
        return f"{self.name} (seed {self.seed})"


@dataclass(frozen=True)
class Plan:
    references: list[RunSpec]
    methods: list[RunSpec]
    reference_tasks: list[str]
    seeds: list[int]
    baselines: dict[int, Path]  # seed -> references/seed<S>.json


def _config_file(name: str, suite_path: Path) -> Path:
    beside = suite_path.parent / name
    for candidate in (beside, beside.with_suffix(".yaml")):
        if candidate.is_file():
            return candidate
    return resolve_config(name)


def _resolve(raw: dict[str, Any], overrides: list[str], *, source: str) -> dict[str, Any]:
    resolved = config_to_dict(validate_config(apply_overrides(raw, overrides, source=source), source=source))
    # The run trains from this resolved dict written to YAML: validate that form too, so that a config whose
    # fully spelled-out form is rejected fails here, before any run of the suite trains.
    validate_config(resolved, source=f"{source} (resolved)")
    return resolved


def _check_selection(flag: str, what: str, asked: list[str] | None, available: list[str], suite_path: Path) -> None:
    """A :class:`ConfigError` naming ``flag`` when ``asked`` (``None``: not restricted) is empty or names
    something the suite does not have."""
    if asked is None:
        return
    unknown = [a for a in asked if a not in available]
    if unknown or not asked:
        raise ConfigError(
            f"{flag}: unknown {what} {unknown} of suite {suite_path.stem} (it has: {', '.join(available) or 'none'})"
        )


def plan_suite(
    suite: Suite,
    suite_path: Path,
    *,
    out: Path,
    seeds: list[int] | None = None,
    overrides: list[str] | None = None,
    jobs: int = 1,
    only_methods: list[str] | None = None,
    only_task_sets: list[str] | None = None,
) -> Plan:
    """Every run of ``suite`` (references first) with its resolved config; config errors (unknown keys,
    a method task without a reference, a ``methods`` or ``task_sets`` name the suite does not have) are raised
    here, before anything trains. ``only_methods`` keeps only those methods and ``only_task_sets`` only those
    task sets of the methods expanded over task sets. A reference is trained only when a planned method has
    its task (Δm needs exactly those): a suite restricted to S-D and S-D-N trains no edge reference."""
    _check_selection("--task-sets", "task set(s)", only_task_sets, list(suite.task_sets), suite_path)
    _check_selection("--methods", "method(s)", only_methods, list(suite.methods), suite_path)
    seeds = list(seeds if seeds is not None else suite.seeds)
    if not seeds:
        raise ConfigError("--seeds: expected at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: expected distinct seeds, got {seeds}")
    out = out.resolve()
    cli = list(overrides or [])
    threads = ["train.threads=1"] if jobs > 1 else []

    def tail(entry: RunEntry, seed: int) -> list[str]:
        return [*suite.overrides, *entry.overrides, *cli, f"seed={seed}", *threads]

    def method_raw(config: str) -> tuple[dict[str, Any], str]:
        path = _config_file(config, suite_path)
        return read_yaml(path), str(path)

    references, methods = [], []
    baselines = {s: out / "references" / f"seed{s}.json" for s in seeds}
    for seed in seeds:
        for task, entry in suite.references.items():
            source = f"{suite_path}: references.{task}"
            if entry.config is not None:
                raw, where = method_raw(entry.config)
                cfg = _resolve(raw, tail(entry, seed), source=f"{source} ({where})")
            else:
                raw, where = method_raw(entry.single_task_of or "")
                mt = validate_config(
                    apply_overrides(raw, [*suite.overrides, *cli, f"seed={seed}"], source=source), source=where
                )
                derived = config_to_dict(single_task_config(mt, task, source=where))
                cfg = _resolve(derived, [*entry.overrides, *threads], source=f"{source} (single-task of {where})")
            if cfg["data"]["tasks"] != [task]:
                raise ConfigError(
                    f"{source}: the reference of {task!r} must train exactly [{task!r}], got data.tasks "
                    f"{cfg['data']['tasks']}"
                )
            references.append(
                RunSpec(f"stl_{task}", "reference", seed, cfg, out / f"stl_{task}" / f"seed{seed}", source)
            )
        for name, entry in suite.methods.items():
            if only_methods is not None and name not in only_methods:
                continue
            config = entry.config or ""
            task_sets = [t for t in suite.task_sets if only_task_sets is None or t in only_task_sets]
            expansions = [(f"{name}_{ts}", config.replace("{task_set}", ts)) for ts in task_sets]
            for run_name, cfg_name in expansions if "{task_set}" in config else [(name, config)]:
                source = f"{suite_path}: methods.{name}"
                raw, where = method_raw(cfg_name)
                baseline = [f"eval.baseline={baselines[seed]}"]
                cfg = _resolve(raw, [*tail(entry, seed), *baseline], source=f"{source} ({where})")
                missing = [t for t in cfg["data"]["tasks"] if t not in suite.references]
                if missing:
                    raise ConfigError(
                        f"{source}: no single-task reference for task(s) {', '.join(missing)} of {where} "
                        f"(references: {', '.join(suite.references)}); Δm needs one per task"
                    )
                methods.append(RunSpec(run_name, "method", seed, cfg, out / run_name / f"seed{seed}", source))
    used = {t for r in methods for t in r.tasks}
    references = [r for r in references if r.tasks[0] in used]
    names = [r.name for r in methods if r.seed == seeds[0]]
    reserved = {f"stl_{t}" for t in suite.references} | {"references", "figures", "logs"}
    clash = sorted({n for n in names if names.count(n) > 1 or n in reserved})
    if clash:
        raise ConfigError(f"{suite_path}: method name(s) {clash} clash with another run's folder; rename them")
    return Plan(references, methods, [t for t in suite.references if t in used], seeds, baselines)
