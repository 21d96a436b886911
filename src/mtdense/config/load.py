"""Load, override, validate and save configs.

YAML is read with a *safe* loader (no arbitrary objects) that also reads ``1e-4`` as a float
(PyYAML's YAML 1.1 resolver would read it as a string). Dotted command-line overrides
(``train.lr=1e-3``) are parsed with the same loader. Validation errors name the file and the
dotted key: ``configs/demo.yaml: train.lrr: unknown key``.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from mtdense.config.schema import Config, ModelConfig
from mtdense.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """SafeLoader that resolves ``1e-4`` / ``-2E3`` as floats."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml(text: str, *, source: str = "<string>") -> Any:
    """Parse YAML text safely; a syntax error names ``source``."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: invalid YAML: {e}") from None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path, *, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` (error naming the path if missing or not a mapping).

    A top-level ``_base_: other.yaml`` (relative to the file) is read first and this file merged
    into it, so the configs of one paper share their recipe instead of copying it.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _chain:
        raise ConfigError(f"{path}: _base_ chain loops back on itself")
    data = parse_yaml(path.read_text(), source=str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    base = data.pop("_base_", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: _base_ must be a file name, got {base!r}")
        data = deep_merge(read_yaml(path.parent / base, _chain=(*_chain, path.resolve())), data)
    return data


def apply_overrides(
    raw: dict[str, Any], overrides: list[str], *, source: str = "command line"
) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a copy of ``raw``."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} is not of the form key.sub=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(
                    f"{source}: cannot set {key!r}: {'.'.join(parts[: i + 1])} is not a mapping"
                )
            node = child
        node[parts[-1]] = parse_yaml(value, source=f"{source} override {key}")
    return out


def _format_errors(err: ValidationError, *, prefix: str, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        if e["type"] == "extra_forbidden":
            lines.append(f"{source}: {loc}: unknown key")
        else:
            lines.append(f"{source}: {loc}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def validate_config(raw: dict[str, Any], *, source: str = "<config>") -> Config:
    """Validate a raw mapping into a :class:`Config`; the ``model`` section by its architecture's class."""
    from mtdense.models import model_config_class  # registry lives with the models

    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, prefix="", source=source)) from None
    model_raw = raw.get("model")
    if not isinstance(model_raw, dict) or "name" not in model_raw:
        raise ConfigError(f"{source}: model.name: missing (the architecture to build)")
    try:
        cls = model_config_class(str(model_raw["name"]))
    except KeyError as e:
        raise ConfigError(f"{source}: model.name: {e.args[0]}") from None
    try:
        cfg.model = cls.model_validate(model_raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, prefix="model", source=source)) from None
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read ``path`` (or start from defaults when ``None``), apply overrides, validate."""
    raw = read_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides or [])
    source = str(path) if path is not None else "<defaults>"
    if overrides:
        source += " (with command-line overrides)"
    return validate_config(raw, source=source)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The fully resolved config as plain data (what ``save_config`` writes)."""
    data = cfg.model_dump(mode="json")
    if isinstance(cfg.model, ModelConfig):
        data["model"] = cfg.model.model_dump(mode="json")
    return data


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the fully resolved config as YAML (re-loadable with :func:`load_config`)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
