"""Typed parameter dataclasses for plugins: validation of raw YAML values, with every problem reported.

A plugin declares ``Params`` as a dataclass; a suite gives a mapping. ``check_params`` returns
either the dataclass instance or a list of ``(key, message)`` problems, so the suite loader can
attach ``file:line:col`` to each. Supported annotations: bool, int, float, str, Literal[...],
Optional[X] / X | None, list[X], tuple[X, ...], dict[str, X] and nested combinations.
Ints are accepted where floats are expected (``lr: 1`` is 1.0); bools are never ints.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

from poisonbench.catalog.suggest import suggestion_suffix


class ParamTypeError(ValueError):
    """A value does not fit its annotation; the message says what was expected."""


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"list of {type_name(typing.get_args(tp)[0])}" if typing.get_args(tp) else "list"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` checked (and minimally converted) against annotation ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise ParamTypeError(f"expected {type_name(tp)}, got {value!r}")
    if origin in (Union, types.UnionType):
        for arm in args:
            try:
                return coerce(value, arm)
            except ParamTypeError:
                continue
        raise ParamTypeError(f"expected {type_name(tp)}, got {_describe(value)}")
    if tp is type(None):
        if value is None:
            return None
        raise ParamTypeError(f"expected null, got {_describe(value)}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ParamTypeError(f"expected {type_name(tp)}, got {_describe(value)}")
        item_tp = args[0] if args else Any
        items = [coerce(v, item_tp) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ParamTypeError(f"expected a mapping, got {_describe(value)}")
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): coerce(v, val_tp) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ParamTypeError(f"expected true or false, got {_describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ParamTypeError(f"expected an integer, got {_describe(value)}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ParamTypeError(f"expected a finite number, got {value!r}")
            return float(value)
        raise ParamTypeError(f"expected a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ParamTypeError(f"expected a string, got {_describe(value)}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ParamTypeError(f"expected {type_name(tp)}, got {_describe(value)}")


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"{value!r} ({type(value).__name__})"


def check_params(cls: type, raw: Mapping[str, Any] | None) -> tuple[Any | None, list[tuple[str | None, str]]]:
    """Build ``cls(**raw)`` after checking every key and value.

    Returns ``(instance, [])`` or ``(None, problems)`` where each problem is ``(key, message)``
    (``key`` None for problems of the whole mapping). Dataclass ``__post_init__`` may raise
    ``ValueError`` to reject combinations; its message becomes a problem too.
    """
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        return None, [(None, f"params must be a mapping, got {_describe(raw)}")]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    problems: list[tuple[str | None, str]] = []
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            problems.append((key, f"unknown param '{key}'{suggestion_suffix(str(key), fields)}"))
            continue
        try:
            values[key] = coerce(value, hints[key])
        except ParamTypeError as err:
            problems.append((key, f"param '{key}': {err}"))
    for name, f in fields.items():
        missing_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if missing_default and name not in raw:
            problems.append((None, f"missing required param '{name}'"))
    if problems:
        return None, problems
    try:
        return cls(**values), []
    except (ValueError, TypeError) as err:
        return None, [(None, str(err))]


def params_to_dict(params: Any) -> dict[str, Any]:
    """JSON-ready dict of a params dataclass (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def params_schema(cls: type) -> dict[str, dict[str, Any]]:
    """``{name: {"type": ..., "default": ...}}`` for listing and docs."""
    hints = typing.get_type_hints(cls)
    schema = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        if isinstance(default, tuple):
            default = list(default)
        schema[f.name] = {"type": type_name(hints[f.name]), "default": default}
    return schema
