"""Configuration: defaults next to each command, a YAML file, then ``key=value`` overrides, in that order.

A config holds values only. YAML is parsed with ``yaml.safe_load`` (no tags, so no Python object is ever built
from a config file). Every key must exist in the command's defaults: a typo ends in an error that suggests the
nearest key. Relative paths in a config file resolve against the file's folder; on the command line, against
the current folder.
"""

from __future__ import annotations

import copy
import difflib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from brainlearn.errors import BrainlearnError, quoted

# libyaml's safe loader where PyYAML has it: PyYAML's own scanner takes time quadratic in the nesting depth of
# [ and { (seconds for a few hundred levels); both build Python values with the same safe constructor.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_DEPTH = 50  # levels of nested sections and lists a config may have


def load_config(
    defaults: Mapping[str, Any],
    *,
    path: str | os.PathLike | None = None,
    flags: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    path_keys: Iterable[str] = (),
) -> dict[str, Any]:
    """Resolve a command's configuration.

    Args:
        defaults: the command's defaults, nested dicts of plain values; they define which keys exist.
        path: a YAML file whose keys override the defaults.
        flags: dotted keys set by command-line options (applied after the file, before ``overrides``).
        overrides: ``"section.key=value"`` strings; values are read as YAML (``3``, ``1e-4``, ``[t1, pet]``).
        path_keys: dotted keys holding file or folder paths; relative values from ``path`` are made relative to
            the config file's folder.

    Returns:
        A new nested dict with every key of ``defaults``.

    Raises:
        BrainlearnError: unreadable YAML (with the line), unknown keys (with a suggestion), or wrong types.
    """
    config = copy.deepcopy(dict(defaults))
    path_keys = set(path_keys)
    free = _free_sections(config)
    if path is not None:
        from_file = read_yaml(path)
        _resolve_paths(from_file, path_keys, Path(path).resolve().parent)
        _merge(config, from_file, source=str(path), free=free)
    for key, value in (flags or {}).items():
        _merge(config, _nest(key, value), source=f"option for {key!r}", free=free)
    for item in overrides:
        key, value = parse_override(item)
        _merge(config, _nest(key, value), source=f"override {item!r}", free=free)
    return config


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping safely; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise BrainlearnError(f"{path}: config file not found.") from error
    except (OSError, UnicodeDecodeError) as error:
        raise BrainlearnError(f"{path}: cannot read the config file ({error}).") from error
    try:
        data = _safe_load(text, str(path))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise BrainlearnError(f"{path}{where}: not valid YAML ({problem}).") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BrainlearnError(f"{path}: a config must be a mapping of keys to values, got {type(data).__name__}.")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``"a.b=value"`` into the key and the YAML-parsed value."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise BrainlearnError(f"override {item!r}: expected key=value, for example trainer.max_epochs=5.")
    try:
        value = _safe_load(raw, f"override {item!r}") if raw.strip() else None
    except yaml.YAMLError as error:
        raise BrainlearnError(f"override {item!r}: the value is not valid YAML ({error}).") from error
    return key, value


def _safe_load(text: str, where: str) -> Any:
    """``yaml.safe_load`` (libyaml's when installed), its other failures made a :class:`BrainlearnError` naming
    ``where``: nesting deeper than :data:`MAX_DEPTH` (PyYAML and the merge recurse), integers of more than 4,300
    digits (which Python refuses to convert) and impossible dates (2001-13-45)."""
    try:
        value = yaml.load(text, Loader=_LOADER)  # a safe loader: plain values only
    except RecursionError:
        raise BrainlearnError(
            f"{where}: values nested too deeply to read; a config nests a few levels of keys and lists."
        ) from None
    except ValueError as error:
        raise BrainlearnError(f"{where}: a value cannot be read ({error}). Correct it, or quote it as text.") from None
    if _depth_over(value, MAX_DEPTH):  # merging and copying a config recurse into it
        raise BrainlearnError(
            f"{where}: values nested more than {MAX_DEPTH} levels deep; a config nests a few levels of keys and lists."
        )
    return value


def _depth_over(value: Any, limit: int) -> bool:
    """Whether dicts and lists nest more than ``limit`` levels in ``value``, found level by level without
    recursion; a container shared through YAML aliases is visited once per level."""
    level = [value]
    for _ in range(limit + 1):
        containers = {id(item): item for item in level if isinstance(item, dict | list)}
        if not containers:
            return False
        level = [child for item in containers.values() for child in (item.values() if isinstance(item, dict) else item)]
    return True


def dump_config(config: Mapping[str, Any]) -> str:
    """The YAML text of a resolved config (the file every run folder keeps)."""
    return yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False)


def get(config: Mapping[str, Any], dotted: str) -> Any:
    """Read ``config["a"]["b"]`` as ``get(config, "a.b")``."""
    value: Any = config
    for part in dotted.split("."):
        value = value[part]
    return value


def _free_sections(config: dict, prefix: str = "") -> set[str]:
    """Dotted names of the sections whose default is ``{}``: free-form (e.g. a network's own options)."""
    free = set()
    for key, value in config.items():
        if isinstance(value, dict):
            free |= {f"{prefix}{key}"} if not value else _free_sections(value, f"{prefix}{key}.")
    return free


def _merge(config: dict, new: Mapping, *, source: str, free: set[str] = frozenset(), prefix: str = "") -> None:
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if key not in config:
            raise BrainlearnError(f"{source}: unknown key {dotted!r}.{_suggest(dotted, config, prefix)}")
        if isinstance(config[key], dict):
            if not isinstance(value, Mapping):
                raise BrainlearnError(
                    f"{source}: {dotted!r} is a section, expected keys under it, got {quoted(value)}."
                )
            if dotted in free:  # passed on as given; the component that takes them checks them
                config[key] = {**config[key], **copy.deepcopy(dict(value))}
                continue
            _merge(config[key], value, source=source, free=free, prefix=f"{dotted}.")
        else:
            config[key] = _checked(dotted, config[key], value, source)


def _checked(key: str, default: Any, value: Any, source: str) -> Any:
    """Check ``value`` against the type of the default (a None default accepts anything)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, float):
        number = _as_float(value)
        if number is not None and math.isfinite(number):
            return number
        if number is not None:
            raise BrainlearnError(f"{source}: {key!r} must be a finite number, got {quoted(value)}.")
    elif isinstance(default, str):
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    elif isinstance(default, list):
        if isinstance(value, list | tuple):
            return list(value)
        if isinstance(value, str):  # "t1" for [t1]; "t1,pet" for [t1, pet]
            return [part.strip() for part in value.split(",") if part.strip()]
    else:
        return value
    raise BrainlearnError(
        f"{source}: {key!r} must be {_type_name(default)}, got {quoted(value)} ({_type_name(value)})."
    )


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _suggest(dotted: str, config: Mapping, prefix: str) -> str:
    keys = [f"{prefix}{key}" for key in config]
    close = difflib.get_close_matches(dotted, keys, n=1, cutoff=0.6)
    if close:
        return f" Did you mean {close[0]!r}?"
    return f" Known keys here: {', '.join(sorted(keys))}."


def _type_name(value: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text", list: "a list"}
    return names.get(type(value), type(value).__name__)


def _nest(dotted: str, value: Any) -> dict:
    nested: dict = {}
    node = nested
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def _resolve_paths(data: dict, path_keys: set[str], base: Path, prefix: str = "") -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            _resolve_paths(value, path_keys, base, f"{dotted}.")
        elif dotted in path_keys and isinstance(value, list):  # a list of paths (report's runs)
            data[key] = [_relative_to(base, item) for item in value]
        elif dotted in path_keys:
            data[key] = _relative_to(base, value)


def _relative_to(base: Path, value: Any) -> Any:
    if isinstance(value, str) and value and not Path(value).is_absolute():
        return str(base / value)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
