"""Typed options: one declaration per option, read by Python, the command line and YAML.

A family's spec and each registered method's config are dataclasses whose fields are made
with :func:`option`. The field carries its default, bounds, choices and help text; from that
one place

* :func:`check` refuses an out-of-range value given from Python (one clear line),
* :mod:`transferkit.commands.typed` builds the click options (``--relative-threshold``), and
* ``--config FILE.yaml`` accepts the same names (``relative_threshold`` or ``relative-threshold``).

>>> @dataclass
... class DANNConfig:
...     hidden: int = option(500, "Width of the domain discriminator.", min=1)
>>> check(DANNConfig(hidden=0))  # raises TransferkitError: hidden must be an integer >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import TransferkitError

_MISSING = dataclasses.MISSING


def option(
    default: Any = None,
    help: str = "",
    *,
    min: float | None = None,
    max: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
    choices: Sequence[str] | Mapping[str, str] | None = None,
    cli: str | None = None,
    flag: str | None = None,
    multiple: bool = False,
    metavar: str | None = None,
    hidden: bool = False,
) -> Any:
    """A dataclass field with what the command line and YAML need to know about it.

    Args:
        default: the default (lists and dicts are copied per instance).
        help: one sentence for ``--help``.
        min, max, min_open, max_open: numeric bounds (inclusive unless ``*_open``).
        choices: allowed strings (a mapping also gives each a description).
        cli: the long option name when it differs from the field name (``"--source-val"``).
        flag: for booleans, the flag that sets the *opposite* of the default
            (``warm_start=True`` with ``flag="--cold-start"``).
        multiple: the option may be repeated (the field is a list or tuple).
        hidden: settable from Python and YAML but not shown in ``--help``.
    """
    meta = {
        "help": help, "min": min, "max": max, "min_open": min_open, "max_open": max_open,
        "choices": tuple(choices) if choices is not None else None,
        "choice_docs": dict(choices) if isinstance(choices, Mapping) else None,
        "cli": cli, "flag": flag, "multiple": multiple, "metavar": metavar, "hidden": hidden,
    }
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"transferkit": meta})
    return dataclasses.field(default=default, metadata={"transferkit": meta})


def meta(f: dataclasses.Field[Any]) -> dict[str, Any]:
    """The option metadata of a field (empty help for plain fields)."""
    return dict(f.metadata.get("transferkit", {"help": ""}))


def fields(cls: Any) -> list[dataclasses.Field[Any]]:
    """The public fields of a config dataclass (those not starting with ``_``)."""
    return [f for f in dataclasses.fields(cls) if not f.name.startswith("_")]


def field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return None


def resolved_type(cls: Any, name: str) -> Any:
    """The annotation of field ``name`` as a real type (``from __future__`` annotations resolved)."""
    hints = typing.get_type_hints(cls)
    return hints[name]


def base_type(annotation: Any) -> tuple[Any, bool, bool]:
    """``(scalar type, optional, is_sequence)`` of an annotation such as ``int | None`` or ``tuple[str, ...]``."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        annotation = args[0] if len(args) == 1 else str
        origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return (args[0] if args else str), optional, True
    if origin is dict:
        return dict, optional, False
    return annotation, optional, False


def describe(cls: Any, f: dataclasses.Field[Any]) -> str:
    """What a field accepts, in words (used in error messages)."""
    m = meta(f)
    typ, _, seq = base_type(resolved_type(cls, f.name))
    if m.get("choices"):
        text = "one of " + ", ".join(m["choices"])
    elif typ is bool:
        text = "true or false"
    elif typ is int:
        text = "an integer" + bounds_text(m)
    elif typ is float:
        text = "a number" + bounds_text(m)
    else:
        text = "a string"
    return f"a list of {text.removeprefix('a ').removeprefix('an ')}s" if seq and not m.get("choices") else text


def bounds_text(m: dict[str, Any]) -> str:
    """`` in [lo, hi]``, `` >= lo``, `` < hi`` or nothing, for error messages."""
    lo, hi = m.get("min"), m.get("max")
    if lo is not None and hi is not None:
        return f" in {'(' if m['min_open'] else '['}{lo}, {hi}{')' if m['max_open'] else ']'}"
    if lo is not None:
        return f" {'>' if m['min_open'] else '>='} {lo}"
    if hi is not None:
        return f" {'<' if m['max_open'] else '<='} {hi}"
    return ""


def _in_bounds(v: float, m: dict[str, Any]) -> bool:
    lo, hi = m.get("min"), m.get("max")
    if lo is not None and (v < lo or (m["min_open"] and v == lo)):
        return False
    return not (hi is not None and (v > hi or (m["max_open"] and v == hi)))


def check(obj: Any, what: str = "") -> Any:
    """Refuse a config whose values break their fields' declared types, bounds or choices.

    Returns ``obj`` so it chains: ``spec = check(AdaptSpec(...))``. The message names the field
    (as the command-line option would) and says what is allowed.
    """
    cls = type(obj)
    for f in fields(cls):
        m = meta(f)
        value = getattr(obj, f.name)
        if value is None:
            continue
        typ, _, seq = base_type(resolved_type(cls, f.name))
        values = list(value) if seq and isinstance(value, (list, tuple)) else [value]
        for v in values:
            bad = False
            if m.get("choices") and v not in m["choices"]:
                raise TransferkitError(f"{what}unknown {f.name} '{v}'; choose one of: {', '.join(m['choices'])}")
            if typ is bool:
                bad = not isinstance(v, bool)
            elif typ in (int, float):
                is_num = isinstance(v, (int, float)) and not isinstance(v, bool)
                bad = not is_num or (typ is int and float(v) != int(v)) or not math.isfinite(float(v)) or not _in_bounds(float(v), m)
            if bad:
                raise TransferkitError(f"{what}{f.name} must be {describe(cls, f)}, got {v!r}")
    return obj


def from_mapping(cls: Any, values: Mapping[str, Any], **override: Any) -> Any:
    """Build ``cls`` from a mapping of option values (keys with ``_`` or ``-``); unknown keys are ignored.

    ``None`` means "the default" for fields whose default is not ``None``; tuples from click
    become the field's sequence type.
    """
    norm = {str(k).replace("-", "_"): v for k, v in values.items()}
    kw: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in override:
            kw[f.name] = override[f.name]
            continue
        if f.name not in norm:
            continue
        v = norm[f.name]
        if v is None and field_default(f) is not None:
            continue
        typ = resolved_type(cls, f.name)
        _, _, seq = base_type(typ)
        if seq and isinstance(v, (list, tuple)):
            origin = typing.get_origin(typ) or typ
            if origin in (typing.Union, types.UnionType):
                origin = next(typing.get_origin(a) for a in typing.get_args(typ) if typing.get_origin(a))
            v = tuple(v) if origin is tuple else list(v)
        kw[f.name] = v
    return cls(**kw)


def as_dict(obj: Any) -> dict[str, Any]:
    """A config as plain JSON/YAML-ready values (tuples become lists)."""
    out: dict[str, Any] = {}
    for f in fields(type(obj)):
        v = getattr(obj, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out
