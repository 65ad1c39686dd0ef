"""YAML files -> ``Config``: ``_base_`` composition, ``--set`` overrides, dump and save.

Composition: a file may name ``_base_:`` (one path or a list, relative to that file). The bases
are merged in order, then the file itself on top. Mappings deep-merge; lists and scalars
replace. Only ``yaml.safe_load`` is used, so tags such as ``!!python/object`` are refused.
Each key remembers the file (or override) that set it last, so a validation error says where
the bad value came from. YAML aliases are allowed (``<<: *defaults`` merges), but a document
that expands to too many values is refused right after parsing: aliases of
aliases can expand a few hundred bytes into billions of values (an "alias bomb"), which the
merging below would otherwise walk forever.
"""
import os
from typing import Any, Dict, List, Sequence, Tuple

import yaml

from .convert import ConfigError, KeyPath, Origins, check_expanded_size, config_from_dict
from .schema import Config

BASE_KEY = "_base_"


def _show(path: str) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def _chain(stack: Sequence[str]) -> str:
    return " -> ".join(_show(p) for p in stack)


def read_yaml(path: str) -> Dict[str, Any]:
    """Reads one YAML file with ``yaml.safe_load``; an empty file is an empty mapping.

    Raises:
        ConfigError: missing file, YAML syntax error, an unsafe tag, a document that expands
            to too many values, or a top level that is not a mapping; the message names the
            file.
    """
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {_show(path)}") from None
    except IsADirectoryError:
        raise ConfigError(f"{_show(path)} is a directory, not a YAML config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{_show(path)}: not UTF-8 text (byte {e.start}); is it a YAML "
                          "config file?") from None
    except yaml.constructor.ConstructorError as e:
        raise ConfigError(
            f"{_show(path)}: unsupported YAML tag ({e.problem}{e.problem_mark}); configs are "
            "read with yaml.safe_load, so only plain mappings, lists and scalars are allowed"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{_show(path)}: invalid YAML: {e}") from None
    if data is None:
        return {}
    check_expanded_size(data, _show(path))
    if not isinstance(data, dict):
        raise ConfigError(
            f"{_show(path)}: the top level must be a mapping of sections, "
            f"got {type(data).__name__}")
    return data


def _record(data: Any, prefix: KeyPath, source: str, origins: Origins) -> None:
    """Marks every key path inside ``data`` as set by ``source``."""
    origins[prefix] = source
    if isinstance(data, dict):
        for key, value in data.items():
            _record(value, prefix + (str(key),), source, origins)


def deep_merge(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
    """Returns ``base`` updated by ``top``: mappings merge recursively, anything else replaces.

    Neither argument is modified.
    """
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _load_tree(path: str, stack: List[str]) -> Tuple[Dict[str, Any], Origins]:
    """Loads ``path`` with its ``_base_`` files merged underneath; returns data and origins."""
    path = os.path.abspath(path)
    if path in stack:
        raise ConfigError(f"_base_ cycle: {_chain(stack + [path])}")
    stack = stack + [path]
    if not os.path.isfile(path):
        if len(stack) == 1:
            raise ConfigError(f"config file not found: {_show(path)}")
        raise ConfigError(
            f"_base_ file not found: {_show(path)} (included by {_chain(stack[:-1])})")
    data = read_yaml(path)
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(
            f"{_show(path)}: {BASE_KEY} must be a path or a list of paths, got {bases!r}")
    merged: Dict[str, Any] = {}
    origins: Origins = {}
    for base in bases:
        base_path = os.path.join(os.path.dirname(path), os.path.expanduser(base))
        base_data, base_origins = _load_tree(base_path, stack)
        merged = deep_merge(merged, base_data)
        origins.update(base_origins)
    merged = deep_merge(merged, data)
    _record(data, (), _show(path), origins)
    return merged, origins


def parse_override(text: str) -> Tuple[KeyPath, Any]:
    """Parses ``"a.b.c=VALUE"``; VALUE is read as a YAML scalar or flow value (``[10, 20]``).

    Raises:
        ConfigError: no ``=``, an empty key part, or a VALUE that is not valid YAML.
    """
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. model.backbone.depth=50")
    key, raw = text.split("=", 1)
    path = tuple(key.strip().split("."))
    if not all(path):
        raise ConfigError(f"override {text!r}: empty part in key {key.strip()!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {e}") from None
    check_expanded_size(value, f"override {key.strip()}")
    return path, value


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str],
                    origins: Origins) -> Dict[str, Any]:
    """Returns ``data`` with each ``KEY=VALUE`` override applied in order (deep-merged).

    ``origins`` is updated so that errors point at the override that set a key.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    for text in overrides:
        path, value = parse_override(text)
        nested: Any = value
        for key in reversed(path):
            nested = {key: nested}
        data = deep_merge(data, nested)
        _record(value, path, f"--set {text}", origins)
        for n in range(1, len(path)):
            origins.setdefault(path[:n], f"--set {text}")
    return data


def load_config(path: str, overrides: Sequence[str] = ()) -> Config:
    """Loads a YAML config with its ``_base_`` files and ``--set`` style overrides.

    Args:
        path: the YAML file.
        overrides: ``["model.backbone.depth=50", "solver.steps=[10,20]"]``, applied after the
            files; values are parsed as YAML.

    Returns:
        The validated, frozen ``Config``.

    Raises:
        ConfigError (a ValueError): missing files, cycles, YAML errors, unknown keys, wrong types
            or unknown choices; the message names the key or file and suggests a fix.
    """
    data, origins = _load_tree(path, [])
    data = apply_overrides(data, overrides, origins)
    return config_from_dict(data, origins)


def override_config(cfg: Config, overrides: Sequence[str]) -> Config:
    """Returns ``cfg`` with ``KEY=VALUE`` overrides applied and validated (e.g. a checkpoint's
    config plus command-line ``--set`` options)."""
    origins: Origins = {(): "<config>"}
    data = apply_overrides(cfg.to_dict(), overrides, origins)
    return config_from_dict(data, origins)


class _Dumper(yaml.SafeDumper):
    """Safe dumper writing mappings as blocks and lists inline (``steps: [10, 20]``)."""


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data,
                                                         flow_style=True))


def dump(cfg: Config) -> str:
    """Returns ``cfg`` as YAML text that ``load_config`` reads back to an equal ``Config``."""
    return yaml.dump(cfg.to_dict(), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
