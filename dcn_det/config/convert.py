"""Turns nested plain dicts into the typed, frozen schema, rejecting anything that does not fit.

Rules (each error names the dotted key, what it got, what it needs, and where the value came
from): unknown keys (with the nearest valid name, via difflib); ``bool`` fields take only
``true``/``false``; ``int`` fields take integers but not booleans; ``float`` fields also take
integers, and strings such as ``5e-4`` because PyYAML (YAML 1.1) reads an exponent without a
dot as a string; ``str`` fields take only strings; Literal fields take only their choices;
list fields take a YAML list (or tuple) whose items are checked the same way, with a fixed
length where the schema fixes one; numbers must be finite and inside the range their annotation
gives (:mod:`.ranges`); then the checks between fields of one section run (:mod:`.checks`).
Missing keys keep their defaults. Values are shown through a size-bounded ``repr``, so a huge
value cannot make building a message slow.
"""
import difflib
import logging
import math
import re
import reprlib
from dataclasses import fields, is_dataclass
from typing import (Annotated, Any, Dict, Literal, Optional, Tuple, Union, get_args, get_origin,
                    get_type_hints)

from .checks import cross_field_errors
from .ranges import range_of
from .schema import ARCH_OF_HEAD, HEAD_CONFIGS, NECK_CONFIGS, RPN_CONFIGS, Config

logger = logging.getLogger("dcn_det")

KeyPath = Tuple[str, ...]
# Maps a key path to a description of where its value came from ("configs/x.yaml", "--set ...").
Origins = Dict[KeyPath, str]

# Far above any real config (the largest here expands to a few hundred values).
MAX_VALUES = 100_000

_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class ConfigError(ValueError):
    """A config file, override or dict that does not fit the schema."""


def describe_origin(path: KeyPath, origins: Origins) -> str:
    """Returns where the value at ``path`` (or its nearest enclosing key) was set."""
    for n in range(len(path), -1, -1):
        if path[:n] in origins:
            return origins[path[:n]]
    return "<defaults>"


def _error(path: KeyPath, message: str, origins: Origins) -> ConfigError:
    return ConfigError(f"{'.'.join(path)}: {message} in {describe_origin(path, origins)}")


def _suggest(word: str, choices) -> str:
    """Returns ``" (did you mean 'x'?)"`` for the closest choice, or the list of choices."""
    names = [str(c) for c in choices]
    if len(str(word)) > 100:  # no key or choice is this long; difflib would be slow on it
        return f" (valid: {', '.join(names)})"
    close = difflib.get_close_matches(str(word), names, n=1, cutoff=0.5)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f" (valid: {', '.join(names)})"


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 3, 8, 8, 80, 80


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to a bounded size (nested containers and long strings elided)."""
    return _SHORT.repr(value)


class _Mismatch(Exception):
    """A value that does not fit its field; the caller adds the key and the origin."""


def convert_section(cls: type, data: Any, path: KeyPath, origins: Origins):
    """Builds dataclass ``cls`` from the mapping ``data`` (missing keys keep their defaults).

    Args:
        cls: a schema dataclass, e.g. ``Config`` or ``BackboneConfig``.
        data: a dict (``None`` stands for an empty mapping, as YAML writes ``key:``).
        path: the dotted key of this section, as a tuple (``()`` for the root).
        origins: where each key path was set, for error messages.

    Raises:
        ConfigError: unknown key, wrong type or unknown choice, naming the dotted key.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = ".".join(path) if path else "the top level"
        raise ConfigError(
            f"{where}: expected a mapping of {cls.__name__} fields, got {_type_name(data)} "
            f"{short_repr(data)} in {describe_origin(path, origins)}")
    hints = get_type_hints(cls, include_extras=True)
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            other = _other_section(cls, key)
            raise _error(path + (str(key),), other or "unknown key" + _suggest(key, names),
                         origins)
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        tp = hints[name]
        if get_origin(tp) is Union:
            tp = _tagged_choice(tp, data[name], path + (name,), origins)
        if is_dataclass(tp):
            kwargs[name] = convert_section(tp, data[name], path + (name,), origins)
            continue
        try:
            kwargs[name] = _convert_value(tp, data[name])
        except _Mismatch as e:
            raise _error(path + (name,), str(e), origins) from None
    section = cls(**kwargs)
    for name, message in cross_field_errors(section):
        # A rule of a section may blame a key of a subsection ("backbone.res5_dilation").
        raise _error(path + tuple(name.split(".")), message, origins)
    return section


def _type_choices(union: Any) -> Dict[str, type]:
    """``{type value: section class}`` of a union of sections tagged by their ``type`` field."""
    return {get_args(get_type_hints(c)["type"])[0]: c for c in get_args(union)}


def _tagged_choice(union: Any, data: Any, path: KeyPath, origins: Origins) -> type:
    """The section class of a tagged union that ``data["type"]`` names (the first by default)."""
    choices = _type_choices(union)
    if not isinstance(data, dict) or "type" not in data:
        return next(iter(choices.values()))
    kind = data["type"]
    if not isinstance(kind, str) or kind not in choices:
        shown = ", ".join(repr(c) for c in choices)
        raise _error(path + ("type",), f"{short_repr(kind)} is not one of {shown}"
                     + _suggest(kind, list(choices)), origins)
    return choices[kind]


# Tagged sections: (what, its type key, {type: section class}).
_TAGGED = (("head", "model.head.type", HEAD_CONFIGS), ("RPN", "model.rpn.type", RPN_CONFIGS),
           ("neck", "model.neck.type", NECK_CONFIGS))


def _other_section(cls: type, key: Any) -> str:
    """For a key that belongs to another type's section (the other head, RPN or neck): a
    message that says so."""
    for what, type_key, choices in _TAGGED:
        own = next((t for t, c in choices.items() if c is cls), None)
        if own is None:
            continue
        for other, sibling in choices.items():
            if sibling is not cls and key in {f.name for f in fields(sibling)}:
                return (f"not a field of the {own!r} {what} ({type_key}); it belongs to "
                        f"the {other!r} {what}")
    return ""


def _convert_value(tp: Any, value: Any) -> Any:
    """Checks ``value`` against the annotation ``tp``; returns it in the schema's type.

    Raises:
        _Mismatch: with a message saying what was expected and what was got.
    """
    if get_origin(tp) is Annotated:
        value = _convert_value(get_args(tp)[0], value)
        bounds = range_of(tp)
        if bounds is not None and not bounds.contains(value):
            raise _Mismatch(f"{value!r} is out of range: must be {bounds.describe()}")
        return value
    if get_origin(tp) is Literal:
        choices = get_args(tp)
        # bool is an int subclass: `true` must not pass as the choice 1.
        for c in choices:
            if type(value) is type(c) and value == c:
                return value
        shown = ", ".join(repr(c) for c in choices)
        raise _Mismatch(f"{short_repr(value)} is not one of {shown}" + _suggest(value, choices))
    if get_origin(tp) is tuple:
        return _convert_list(tp, value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            number = float(value)
        if number is not None:
            if not math.isfinite(number):
                raise _Mismatch(f"expected a finite float, got {value!r}")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a schema annotation this module does not know
        raise TypeError(f"config schema has a field of unsupported type {tp!r}")
    raise _Mismatch(f"expected {tp.__name__}, got {_type_name(value)} {short_repr(value)}")


def _convert_list(tp: Any, value: Any) -> tuple:
    args = get_args(tp)
    variadic = len(args) == 2 and args[1] is Ellipsis
    need = f"a list of {_arg_name(args[0])}" if variadic else \
        f"a list of {len(args)} items ({', '.join(_arg_name(a) for a in args)})"
    if not isinstance(value, (list, tuple)):
        raise _Mismatch(f"expected {need}, got {_type_name(value)} {short_repr(value)}")
    if not variadic and len(value) != len(args):
        raise _Mismatch(f"expected {need}, got {len(value)} items {short_repr(list(value))}")
    item_types = [args[0]] * len(value) if variadic else list(args)
    out = []
    for i, (item_tp, item) in enumerate(zip(item_types, value)):
        try:
            out.append(_convert_value(item_tp, item))
        except _Mismatch as e:
            raise _Mismatch(f"item {i} of {short_repr(list(value))}: {e}") from None
    return tuple(out)


def _arg_name(tp: Any) -> str:
    if get_origin(tp) is Annotated:
        bounds = range_of(tp)
        base = _arg_name(get_args(tp)[0])
        return f"{base} {bounds.describe()}" if bounds is not None else base
    if get_origin(tp) is Literal:
        return " | ".join(repr(c) for c in get_args(tp))
    return tp.__name__


def check_expanded_size(data: Any, source: str) -> None:
    """Raises ConfigError if ``data``, with every alias expanded, holds over ``MAX_VALUES`` values.

    Shared (aliased) containers are counted once per reference, as a walk over the document
    would visit them; the walk stops at the limit, so the check itself is bounded. A
    self-referencing alias (``&a [*a]``) counts as too large.
    """
    count, stack = 0, [data]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(
                f"{source}: the config expands to more than {MAX_VALUES} values (YAML aliases that "
                "repeat other aliases, or an alias inside itself); refusing it")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def config_from_dict(data: Dict[str, Any], origins: Optional[Origins] = None,
                     source: str = "<dict>") -> Config:
    """Builds a validated ``Config`` from nested plain dicts (e.g. one stored in a checkpoint).

    Args:
        data: ``cfg.to_dict()``-shaped mapping; missing keys keep their defaults.
        origins: where each key path was set; by default everything is attributed to ``source``.
        source: the description used in error messages when ``origins`` is not given.

    Raises:
        ConfigError: unknown key, wrong type or unknown choice.
    """
    origins = origins if origins is not None else {(): source}
    check_expanded_size(data, describe_origin((), origins))
    data = _drop_removed_keys(_drop_legacy_arch(data, origins), origins)
    return convert_section(Config, data, (), origins)


# Keys that older versions wrote (so older checkpoints hold them) and this one no longer has.
REMOVED_KEYS = {("runtime", "inject_nan_at_iter"): "a test hook of the training loop"}


def _drop_removed_keys(data: Any, origins: Origins) -> Any:
    """Drops the :data:`REMOVED_KEYS` with a warning naming each (and where it came from)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for (section, key), why in REMOVED_KEYS.items():
        if isinstance(out.get(section), dict) and key in out[section]:
            logger.warning("%s: ignoring %s.%s (%s, no longer a config key)",
                           describe_origin((section, key), origins), section, key, why)
            out[section] = {k: v for k, v in out[section].items() if k != key}
    return out


def _drop_legacy_arch(data: Any, origins: Origins) -> Any:
    """Upgrades a config written before the head sections were split (e.g. one stored in an
    older checkpoint or inference file), recognised by its ``model.arch``.

    ``model.arch`` must agree with ``model.head.type`` and is dropped; the head fields of the
    other head type (which such configs carried, and which were ignored) are dropped too. A
    warning names what was dropped. A disagreeing ``arch`` is refused.
    """
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or "arch" not in model:
        return data
    head = model.get("head") if isinstance(model.get("head"), dict) else {}
    kind = head.get("type", "rfcn")
    if not isinstance(kind, str) or ARCH_OF_HEAD.get(kind) != model["arch"]:
        raise _error(("model", "arch"), f"{short_repr(model['arch'])} does not match "
                     f"model.head.type {short_repr(kind)}; the architecture follows the head type (rfcn -> rfcn, "
                     "fast_rcnn -> faster_rcnn), so remove model.arch", origins)
    own = {f.name for f in fields(HEAD_CONFIGS[kind])}
    other = sorted(k for k in head if k not in own
                   and any(k in {f.name for f in fields(c)} for c in HEAD_CONFIGS.values()))
    logger.warning("%s: an older config format (model.arch, which now follows model.head.type%s)"
                   "; ignoring %s", describe_origin(("model", "arch"), origins),
                   ", and the other head's fields" if other else "",
                   ", ".join(["model.arch"] + [f"model.head.{k}" for k in other]))
    model = {k: v for k, v in model.items() if k != "arch"}
    if isinstance(model.get("head"), dict):
        model["head"] = {k: v for k, v in head.items() if k not in other}
    return {**data, "model": model}
