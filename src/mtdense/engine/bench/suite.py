"""Suite files: what ``mtdense bench SUITE`` trains (methods × task sets × seeds) and against what.

A suite is one YAML file (a packaged one in ``mtdense/suites/`` is found by name, like the configs)::

    description: MTI-Net Table 2a on the synthetic benchmark
    seeds: [0, 1, 2]                 # default seeds (``--seeds`` replaces them)
    overrides: [train.max_steps=300] # dotted overrides for every run (references too)
    task_sets: [sd, sdn]             # optional: a method whose config holds {task_set} is run once per set
    references:                      # the single-task networks of the Δm baseline, one per task
      semseg: {config: synthetic/stl_semseg_hrnet18s}
      depth: {single_task_of: synthetic/mtl_hrnet18s}   # or derived from a multi-task config
    methods:
      mtl: {config: synthetic/mtl_hrnet18s}
      padnet_aux: {config: synthetic/padnet_hrnet18s_aux, overrides: [train.lr=2e-3]}
      xtam: {config: "synthetic/xtam_resnet18_{task_set}"}

``config`` is a packaged config name or a YAML path (relative to the suite file first, then to the
current folder); ``single_task_of`` (references only) derives the reference from a multi-task config
with :func:`mtdense.config.single_task_config`, the same networks ``mtdense demo`` and
``mtdense complexity`` compare against. Every task of every method needs a reference (MTI-Net Eq. 2
compares each task with its single-task network), which is checked before anything trains.
Adding a suite is adding one such file; no code changes.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from mtdense.config.load import parse_yaml
from mtdense.config.schema import Section
from mtdense.errors import ConfigError

PACKAGED_SUITES = Path(__file__).resolve().parents[2] / "suites"
"""The suites shipped inside the package (``mtdense bench NAME``)."""


class RunEntry(Section):
    """One method or reference: a config (name or path) or, for a reference, the multi-task config whose
    single-task network it is; plus dotted overrides applied after the suite's own."""

    config: str | None = None
    single_task_of: str | None = None
    overrides: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self) -> RunEntry:
        if (self.config is None) == (self.single_task_of is None):
            raise ValueError("give exactly one of config and single_task_of")
        return self


class Suite(Section):
    """A benchmark suite (module docstring)."""

    description: str = ""
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    overrides: list[str] = Field(default_factory=list)
    task_sets: list[str] = Field(default_factory=list)
    references: dict[str, RunEntry] = Field(min_length=1)
    methods: dict[str, RunEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _methods_have_configs(self) -> Suite:
        for name, entry in self.methods.items():
            if entry.config is None:
                raise ValueError(f"methods.{name}: a method needs config (single_task_of is for references)")
            if "{task_set}" in entry.config and not self.task_sets:
                raise ValueError(f"methods.{name}: config {entry.config!r} uses {{task_set}} but task_sets is empty")
        return self


def packaged_suite_names() -> list[str]:
    """Names of the packaged suites (``synthetic-2a``, ...)."""
    return sorted(p.stem for p in PACKAGED_SUITES.glob("*.yaml"))


def resolve_suite(suite: str | Path) -> Path:
    """The YAML file of a SUITE argument: an existing file, else a packaged suite name (with or without
    ``.yaml``). Raises :class:`ConfigError` naming the argument and the packaged suites otherwise."""
    path = Path(suite)
    if path.is_file():
        return path
    name = path.as_posix().removesuffix(".yaml")
    packaged = PACKAGED_SUITES / f"{name}.yaml"
    if not path.is_absolute() and packaged.is_file():
        return packaged
    names = packaged_suite_names()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"suite not found: {suite} is neither a file nor a packaged suite{hint} (packaged: {', '.join(names)})"
    )


def load_suite(suite: str | Path) -> tuple[Suite, Path]:
    """Read and validate a suite; errors name the file and the dotted key."""
    path = resolve_suite(suite)
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"), source=str(path))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the suite: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    try:
        return Suite.model_validate(raw), path
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else f"{err['msg']} (got {err.get('input')!r})"
            lines.append(f"{path}: {loc}: {msg}")
        raise ConfigError("\n".join(lines)) from None
