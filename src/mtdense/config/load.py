"""Load, override, validate and save configs.

YAML is read with a *safe* loader (no arbitrary objects) that also reads ``1e-4`` as a float
(PyYAML's YAML 1.1 resolver would read it as a string). Dotted command-line overrides
(``train.lr=1e-3``) are parsed with the same loader. Validation errors name the file and the
dotted key: ``my.yaml: train.lrr: unknown key``.

A CONFIG argument is a file path or the name of a config shipped inside the package (the way
detectron2's model zoo finds its configs by name): ``synthetic/mtinet_hrnet18s`` is
``mtdense/configs/synthetic/mtinet_hrnet18s.yaml`` of the installed package, and its ``_base_``
resolves next to it, inside the package. An existing file wins over a packaged name, so a local
``demo.yaml`` is never shadowed. :func:`list_configs` lists the packaged names (``mtdense configs``).
"""

from __future__ import annotations

import copy
import difflib
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


PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
"""The configs shipped inside the package (``mtdense configs`` lists them by name)."""


def packaged_config_names() -> list[str]:
    """Names of the packaged configs (``nyud/mtinet_hrnet18s``), without the ``_``-prefixed shared recipes."""
    return sorted(
        p.relative_to(PACKAGED_CONFIGS).with_suffix("").as_posix()
        for p in PACKAGED_CONFIGS.rglob("*.yaml")
        if not p.name.startswith("_")
    )


def list_configs() -> list[tuple[str, str]]:
    """``(name, description)`` of every packaged config; the description is the file's first comment line."""
    out = []
    for name in packaged_config_names():
        first = ""
        for line in (PACKAGED_CONFIGS / f"{name}.yaml").read_text(encoding="utf-8").splitlines():
            if line.startswith("#"):
                first = line.lstrip("#").strip()
                break
        out.append((name, first))
    return out


def resolve_config(config: str | Path) -> Path:
    """The YAML file of a CONFIG argument: an existing file path, else a packaged config name.

    ``synthetic/mtinet_hrnet18s`` (with or without ``.yaml``, with or without a leading ``configs/``)
    names ``mtdense/configs/synthetic/mtinet_hrnet18s.yaml``. Raises :class:`ConfigError` naming the
    argument and the closest packaged names when it is neither.
    """
    path = Path(config)
    if path.is_file():
        return path
    if path.exists():
        raise ConfigError(f"config {path}: expected a YAML file, got a folder")
    name = path.as_posix().removesuffix(".yaml").removesuffix(".yml")
    for prefix in ("src/mtdense/configs/", "mtdense/configs/", "configs/"):
        name = name.removeprefix(prefix)
    packaged = PACKAGED_CONFIGS / f"{name}.yaml"
    if not path.is_absolute() and packaged.is_file():
        return packaged
    close = difflib.get_close_matches(name, packaged_config_names(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"config not found: {config} is neither a file nor a packaged config name{hint} "
        "(`mtdense configs` lists the packaged ones)"
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); save the config as UTF-8"
        ) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config: {e.strerror or e}") from None


def read_yaml(path: str | Path, *, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` (error naming the path if missing, not UTF-8 or not a mapping).

    A top-level ``_base_: other.yaml`` (relative to the file) is read first and this file merged
    into it, so the configs of one paper share their recipe instead of copying it.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _chain:
        raise ConfigError(f"{path}: _base_ chain loops back on itself")
    data = parse_yaml(_read_text(path), source=str(path)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    base = data.pop("_base_", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: _base_ must be a file name, got {base!r}")
        data = deep_merge(read_yaml(path.parent / base, _chain=(*_chain, path.resolve())), data)
    return data


def apply_overrides(raw: dict[str, Any], overrides: list[str], *, source: str = "command line") -> dict[str, Any]:
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
                raise ConfigError(f"{source}: cannot set {key!r}: {'.'.join(parts[: i + 1])} is not a mapping")
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
    """Read ``path`` — a file or a packaged config name (:func:`resolve_config`) — or start from defaults
    when ``None``; apply overrides; validate."""
    path = resolve_config(path) if path is not None else None
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
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True), encoding="utf-8")
