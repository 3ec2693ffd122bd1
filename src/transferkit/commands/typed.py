"""Click options generated from typed configs (:mod:`transferkit.options`).

``config_options(TrainConfig)`` turns every field into an option with its type, bounds,
choices, default and help; ``method_options(ADAPT_METHODS)`` adds the fields of every
registered method's config, each marked with the methods it belongs to. YAML configs go
through the same click parameters (:mod:`transferkit.config_validation`), so the command
line, YAML and Python share one declaration per option.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import click

from ..engine.registry import Registry
from ..errors import TransferkitError
from ..options import base_type, field_default, fields, meta, resolved_type


def _click_type(cls: Any, f: dataclasses.Field[Any]) -> Any:
    m = meta(f)
    typ, _, _ = base_type(resolved_type(cls, f.name))
    if m.get("choices"):
        return click.Choice(list(m["choices"]))
    if typ is int:
        if m.get("min") is None and m.get("max") is None:
            return click.INT
        return click.IntRange(m.get("min"), m.get("max"), min_open=m["min_open"], max_open=m["max_open"])
    if typ is float:
        if m.get("min") is None and m.get("max") is None:
            return click.FLOAT
        return click.FloatRange(m.get("min"), m.get("max"), min_open=m["min_open"], max_open=m["max_open"])
    return click.STRING


def option_name(f: dataclasses.Field[Any]) -> str:
    """The long option of a field: ``relative_threshold`` -> ``--relative-threshold``."""
    return meta(f).get("cli") or "--" + f.name.replace("_", "-")


def _field_option(cls: Any, f: dataclasses.Field[Any], unset_default: bool = False, note: str = "") -> Callable[[Any], Any]:
    """One click option for field ``f`` of ``cls``.

    With ``unset_default`` the click default is ``None`` (so a value the user did not give can
    be told apart) and the declared default is shown in the help instead.
    """
    m = meta(f)
    default = field_default(f)
    typ, _, seq = base_type(resolved_type(cls, f.name))
    help_text = m.get("help", "")
    if m.get("choice_docs"):
        help_text = f"{help_text} " + "; ".join(f"{k}: {v}" for k, v in m["choice_docs"].items()) + "."
    if note:
        help_text = f"{help_text} [{note}]"
    if typ is bool and not seq:
        if m.get("flag"):  # a flag that sets the opposite of the default (--cold-start for warm_start=True)
            return click.option(m["flag"], f.name, flag_value=not default, default=None if unset_default else default,
                                help=help_text, hidden=m.get("hidden", False))
        return click.option(option_name(f), f.name, is_flag=True, default=None if unset_default else default,
                            help=help_text, hidden=m.get("hidden", False))
    kw: dict[str, Any] = {"type": _click_type(cls, f), "help": help_text, "hidden": m.get("hidden", False)}
    if isinstance(default, dict):  # NAME=VALUE pairs (distillation losses)
        default = tuple(f"{k}={v:g}" for k, v in default.items())
    if seq or m.get("multiple"):
        kw["multiple"] = True
        kw["default"] = None if unset_default else (tuple(default) if default else ())
        if default and not unset_default:
            kw["show_default"] = ", ".join(map(str, default))
    else:
        kw["default"] = None if unset_default else default
        kw["show_default"] = default is not None and not unset_default
    if unset_default and default not in (None, (), []):
        shown = ", ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        kw["help"] = f"{kw['help']} [default: {shown}]"
    if m.get("metavar"):
        kw["metavar"] = m["metavar"]
    return click.option(option_name(f), f.name, **kw)


def config_options(*classes: Any, exclude: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> Callable[[Any], Any]:
    """Decorator adding one option per field of each config class (first class wins on a shared name).

    ``exclude`` leaves fields out (the command declares them itself); ``only`` keeps just those named.
    """
    decos: list[Callable[[Any], Any]] = []
    seen: set[str] = set(exclude)
    for cls in classes:
        for f in fields(cls):
            if f.name in seen or (only is not None and f.name not in only):
                continue
            seen.add(f.name)
            decos.append(_field_option(cls, f))
    return _compose(decos)


def method_fields(registry: Registry[Any]) -> dict[str, tuple[type, dataclasses.Field[Any], list[str]]]:
    """``{field name: (config class, field, [methods using it])}`` over a registry's configs.

    Two methods may share an option (DANN's and CDAN's ``hidden``) only with the same type and
    default: it is one option on the command line.
    """
    out: dict[str, tuple[type, dataclasses.Field[Any], list[str]]] = {}
    for entry in registry.entries():
        if entry.config is None:
            continue
        for f in fields(entry.config):
            if f.name in out:
                cls0, f0, users = out[f.name]
                if resolved_type(cls0, f.name) != resolved_type(entry.config, f.name) or field_default(f0) != field_default(f):
                    raise TypeError(f"option '{f.name}' of {entry.name} differs from the one of {', '.join(users)}")
                users.append(entry.name)
            else:
                out[f.name] = (entry.config, f, [entry.name])
    return out


def method_options(registry: Registry[Any], exclude: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """Options for every registered method's config; each help says which methods use it."""
    decos = [
        _field_option(cls, f, unset_default=True, note=", ".join(users))
        for name, (cls, f, users) in method_fields(registry).items()
        if name not in exclude
    ]
    return _compose(decos)


def chosen_options(registry: Registry[Any], chosen: list[str], params: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The method options the user gave, refusing one that no chosen method takes.

    ``params`` are the command's values (unset method options are ``None`` or empty).
    """
    given = {k: params[k] for k in method_fields(registry) if params.get(k) not in (None, ())}
    allowed = {n for c in chosen for n in registry.entry(c).options()}
    for name in given:
        if name not in allowed:
            users = method_fields(registry)[name][2]
            raise TransferkitError(
                f"--{name.replace('_', '-')} is an option of {', '.join(users)}, not of the chosen {what} "
                f"{', '.join(chosen)}; drop it or change the {what}"
            )
    return given


def _compose(decos: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def deco(fn: Any) -> Any:
        for d in reversed(decos):
            fn = d(fn)
        return fn

    return deco


def describe_entry(registry: Registry[Any], name: str) -> str:
    """A method's description and its own options with defaults, bounds and help (``transferkit methods``)."""
    from ..options import describe

    entry = registry.entry(name)
    lines = [f"{name}: {entry.doc}"]
    if entry.config is None:
        lines.append("  (no options of its own)")
        return "\n".join(lines)
    for f in fields(entry.config):
        m = meta(f)
        if m.get("flag"):
            lines.append(f"  {m['flag']:<24} a flag ({f.name}={not field_default(f)!r} when given). {m.get('help', '')}")
            continue
        default = field_default(f)
        shown = ", ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        lines.append(f"  {option_name(f):<24} {describe(entry.config, f)}; default {shown}. {m.get('help', '')}")
    return "\n".join(lines)
