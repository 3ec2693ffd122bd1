"""Turn any malformed YAML config or option value into one clear line.

A ``--config FILE.yaml`` is untrusted input: it may not be UTF-8, not YAML, not a mapping,
carry python tags, name options that do not exist, or give a list where one number is
expected. :func:`read_config` and :func:`convert_value` check all of that *before* click
sees a value, and raise :class:`~transferkit.errors.TransferkitError` with one line that
names the field, the value and what is allowed, e.g.::

    error: config run.yaml: 'epochs' must be an integer >= 1, got 'ten'

Rules (stricter than click's own conversion, which would silently turn ``2.7`` into ``2``,
``true`` into ``1`` or a mapping into its ``str``):

* a flag takes ``true`` or ``false`` only;
* an option takes one scalar (string, number); a repeatable option a scalar or a list of them;
* integers must be integral, numbers finite (no ``.nan`` / ``.inf``), booleans are not numbers;
* ``null`` means "use the default".
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

import click
import yaml

from .errors import TransferkitError
from .options import bounds_text

_MAX_SHOWN = 60


def show(value: Any) -> str:
    """A short, single-line rendering of a user value for an error message."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, (str, int, float)):
        text = repr(value)
    elif isinstance(value, (list, tuple)):
        text = f"a list {value!r}"
    elif isinstance(value, dict):
        text = f"a mapping {value!r}"
    else:
        text = f"{type(value).__name__} {value!r}"
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _range_text(t: click.IntRange | click.FloatRange) -> str:
    return bounds_text({"min": t.min, "max": t.max, "min_open": t.min_open, "max_open": t.max_open})


def allowed(param: click.Parameter) -> str:
    """What a parameter accepts, in words."""
    t = param.type
    if isinstance(param, click.Option) and param.is_flag:
        return "true or false"
    if isinstance(t, click.Choice):
        text = "one of " + ", ".join(str(c) for c in t.choices)
    elif isinstance(t, click.IntRange):
        text = "an integer" + _range_text(t)
    elif isinstance(t, click.FloatRange):
        text = "a number" + _range_text(t)
    elif t is click.INT:
        text = "an integer"
    elif t is click.FLOAT:
        text = "a number"
    elif t is click.BOOL:
        text = "true or false"
    elif isinstance(t, click.Path):
        text = "a path"
    elif t is click.STRING:
        text = "a string"
    elif isinstance(t, click.Tuple):
        text = f"a list of {len(t.types)} values"
    else:
        text = f"a {t.name}"
    if getattr(param, "multiple", False):
        text += " (or a list of them)"
    return text


def _is_int_type(t: click.ParamType) -> bool:
    return t is click.INT or isinstance(t, click.IntRange)


def _is_float_type(t: click.ParamType) -> bool:
    return t is click.FLOAT or isinstance(t, click.FloatRange)


def _scalar(value: Any, param: click.Parameter, ctx: click.Context | None, fail: Any, t: click.ParamType | None = None) -> Any:
    t = param.type if t is None else t
    if isinstance(value, bool):
        if t is not click.BOOL:
            fail()
        return value
    if not isinstance(value, (str, int, float)):
        fail()  # mappings, lists, dates, binary ...
    if _is_int_type(t):
        if isinstance(value, float):
            if not (math.isfinite(value) and value.is_integer()):
                fail()
            value = int(value)
        elif isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                fail()
    elif _is_float_type(t):
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                fail()
        if not math.isfinite(float(value)):
            fail()
    elif isinstance(value, float) and not math.isfinite(value) and not isinstance(t, click.Choice):
        fail()
    try:
        return t.convert(value, param, ctx)
    except click.BadParameter:
        fail()
    except Exception:
        fail()
    return None  # unreachable: fail() raises


def convert_value(key: Any, value: Any, param: click.Parameter, ctx: click.Context | None, source: str) -> Any:
    """Check and convert one config value for ``param``; ``None`` (YAML ``null``) is returned as is."""

    def fail() -> None:
        raise TransferkitError(f"{source}: '{key}' must be {allowed(param)}, got {show(value)}")

    if value is None:
        return None
    if isinstance(param, click.Option) and param.is_flag:
        if not isinstance(value, bool):
            fail()
        return value
    if isinstance(param.type, click.Tuple):
        types = param.type.types
        if not isinstance(value, list) or len(value) != len(types):
            fail()
        return tuple(_scalar(item, param, ctx, fail, t) for item, t in zip(value, types, strict=True))
    if getattr(param, "multiple", False):
        items = value if isinstance(value, list) else [value]
        return [_scalar(item, param, ctx, fail) for item in items]
    return _scalar(value, param, ctx, fail)


def read_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config as a mapping with the safe loader, or explain in one line why not."""
    path = Path(path)
    if not path.is_file():
        raise TransferkitError(f"config file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TransferkitError(f"could not read config {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TransferkitError(f"config {path} is not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8 YAML") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark is not None else ""
        what = (exc.problem or exc.context or "invalid YAML").replace("\n", " ")
        raise TransferkitError(
            f"could not read config {path}{where}: {what} (only plain YAML is allowed; "
            "tags such as !!python/object are refused)"
        ) from None
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TransferkitError(f"could not read config {path}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single value {show(data)}"
        raise TransferkitError(f"config {path} must be a mapping of option: value (e.g. 'epochs: 5'), got {kind}")
    return data


def resolve_config(path: str | Path, params: list[click.Parameter], ctx: click.Context | None) -> dict[str, Any]:
    """Map a config file onto a command's parameters: ``{param name: converted value}``.

    Keys are option names with ``-`` or ``_``; ``config`` itself and unknown keys are refused.
    ``null`` values are left out (the option keeps its default).
    """
    data = read_config(path)
    names = {p.name: p for p in params if p.name and p.name not in ("config", "help")}
    options = {}
    for p in names.values():  # an option may be spelled by its flag (--model) or its dest (arch)
        for opt in getattr(p, "opts", []):
            if opt.startswith("--"):
                options[opt[2:].replace("-", "_")] = p
        options.setdefault(p.name, p)
    resolved: dict[str, Any] = {}
    source = f"config {path}"
    for key, value in data.items():
        name = str(key).strip().replace("-", "_")
        if name == "command" and ctx is not None:  # saved by transferkit in a run's config.yaml
            if str(value) != ctx.info_name:
                raise TransferkitError(f"{source} is a config for `transferkit {show(value)}`, not `transferkit {ctx.info_name}`")
            continue
        param = options.get(name)
        if param is None:
            known = sorted({k.replace("_", "-") for k in options})
            close = difflib.get_close_matches(name.replace("_", "-"), known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise TransferkitError(f"{source}: unknown key {show(key)}{hint} known keys: {', '.join(known)}")
        converted = convert_value(key, value, param, ctx, source)
        if converted is not None:
            resolved[param.name] = converted
    return resolved


def check_finite(ctx: click.Context, params: dict[str, Any]) -> None:
    """Refuse ``nan``/``inf`` given on the command line to a numeric option (click accepts them)."""
    for p in ctx.command.params:
        value = params.get(p.name or "")
        if _is_float_type(p.type) and isinstance(value, float) and not math.isfinite(value):
            flag = max(getattr(p, "opts", [p.name]), key=len)
            raise TransferkitError(f"option {flag} must be {allowed(p)}, got {show(value)}")
