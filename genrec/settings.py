"""The one way genrec reads settings: TOML tables into dataclasses, ``--set`` assignments, one
error style, and one mark for the settings that change how fast, not what, a stage computes.

Every section (``[run]``, ``[data]``, ``[embed]`` with ``[embed.multimodal]`` and
``[embed.diffusion]``, ``[tokenize]``, ``[model]``, ``[train]``, ``[eval]``) is a dataclass built by
:func:`build`: every key checked against the fields (a near miss is suggested), every value
against the field's type (an int is taken where a float is expected), errors as
:class:`ConfigError` naming the file and the dotted key. A field made with :func:`runtime` stays
out of :func:`hashed_settings`, which is what cache keys and training signatures hash.
Standard library only: a config loads on any machine.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import tomllib
import types
import typing
from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A setting is unknown, of the wrong type or out of range: the message names it."""


def runtime(default: Any = dataclasses.MISSING, **kw) -> Any:
    """A field that changes how a stage runs (device, batch size for speed, progress bars), never
    its result: :func:`hashed_settings` leaves it out, so changing it reuses cached outputs."""
    return dataclasses.field(default=default, metadata={"cache": False}, **kw)


def require(ok: bool, key: str, value: Any, what: str) -> None:
    """A range check's error, in the one style: ``key = value is invalid: it must be what``."""
    if not ok:
        raise ConfigError(f"{key} = {value!r} is invalid: it must be {what}")


def hashed_settings(obj: Any) -> Any:
    """The fields of a settings dataclass that decide results (those made with :func:`runtime`
    dropped), recursively, as plain JSON-able values. A dataclass with a ``hash_form(settings)``
    method rewrites its own (a renamed setting keeps the keys of the caches made before)."""
    if dataclasses.is_dataclass(obj):
        settings = {
            f.name: hashed_settings(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.metadata.get("cache", True)
        }
        hash_form = getattr(obj, "hash_form", None)
        return hash_form(settings) if hash_form is not None else settings
    if isinstance(obj, list | tuple):
        return [hashed_settings(v) for v in obj]
    return obj


def stable_hash(obj: Any, length: int = 16) -> str:
    """sha256 (hex, truncated) of ``obj`` as canonical JSON: equal settings, equal hash, anywhere."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# ---- TOML tables and --set assignments ----
def merge(base: dict, over: dict) -> dict:
    """``base`` with ``over``'s values, tables merged key by key (neither is changed)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_assignment(assignment: str, *, prefix: str = "", option: str = "--set") -> dict:
    """``section.key=value`` as a nested table. The value is read as TOML (numbers, booleans,
    strings, lists); a bare word is a string. ``prefix`` (e.g. "tokenize") is put in front of a key
    that does not start with it, for commands that take one section's settings; ``option`` names
    the command-line option in errors."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if prefix and not key.startswith(prefix + "."):
        key = f"{prefix}.{key}"
    if not sep or "." not in key or key.endswith("."):
        example = f"{prefix}.key=value" if prefix else "section.key=value, e.g. train.lr=0.001"
        if option != "--set":
            example = "key=value"
        raise ConfigError(f"{option} {assignment!r} must look like {example}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()  # a bare word: a string
    *parents, leaf = key.split(".")
    nested: dict = {leaf: value}
    for p in reversed(parents):
        nested = {p: nested}
    return nested


def apply_assignments(table: dict, assignments: Iterable[str], *, prefix: str = "", option: str = "--set") -> dict:
    """``table`` with each ``--set`` assignment applied in order."""
    for assignment in assignments:
        table = merge(table, parse_assignment(assignment, prefix=prefix, option=option))
    return table


# ---- tables into dataclasses ----
def build(cls: type, table: Any, prefix: str = "", where: str = "config") -> Any:
    """Dataclass ``cls`` from a TOML table: unknown keys and values of the wrong type are a
    :class:`ConfigError` naming ``where`` (the file) and the dotted key under ``prefix``."""
    name = prefix.rstrip(".") or "the top level"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: {name} must be a table, got {table!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in table:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else "."
            raise ConfigError(
                f"{where}: unknown key {prefix + key!r}{hint} Valid keys of "
                f"{'[' + prefix.rstrip('.') + ']' if prefix else 'the config'}: {', '.join(fields)}"
            )
    return cls(**{key: _coerce(value, hints[key], prefix + key, where) for key, value in table.items()})


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key + ".", where)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            try:
                return _coerce(value, option, key, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return [_coerce(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if hint is Any:
        return value
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise ConfigError(f"{where}: {key} must be {getattr(hint, '__name__', hint)}, got {value!r}")
    return value
