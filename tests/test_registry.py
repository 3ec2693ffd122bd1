"""Every option of every registered method reaches the method from the command line, YAML and Python."""

from __future__ import annotations

from typing import Any

import click
import pytest
import yaml

from transferkit.adapt import ADAPT_METHODS, AdaptSpec
from transferkit.commands import adapt as adapt_cmd
from transferkit.commands import distill as distill_cmd
from transferkit.commands import finetune as finetune_cmd
from transferkit.commands import meta as meta_cmd
from transferkit.commands.typed import method_fields, option_name
from transferkit.config_validation import resolve_config
from transferkit.distill import LOSSES
from transferkit.engine import TrainConfig
from transferkit.engine.registry import Registry
from transferkit.errors import TransferkitError
from transferkit.finetune import REGULARIZERS
from transferkit.meta import LEARNERS, MetaSpec
from transferkit.options import base_type, field_default, fields, meta, option, resolved_type

# family -> (command, registry, the option that chooses entries, how to choose entry `name`)
FAMILIES: dict[str, tuple[click.Command, Registry[Any], list[str]]] = {
    "adapt": (adapt_cmd.adapt_cmd, ADAPT_METHODS, ["--source", "digits", "--target", "digits:test"]),
    "finetune": (finetune_cmd.finetune_cmd, REGULARIZERS, ["--init", "runs/x", "--data", "digits"]),
    "distill": (distill_cmd.distill_cmd, LOSSES, ["--teacher", "runs/t", "--student", "mlp", "--data", "digits", "--hint", "a:b"]),
}


def choose(family: str, name: str) -> list[str]:
    return {"adapt": ["--method", name], "finetune": ["--regularizer", name], "distill": ["--loss", f"{name}=1"]}[family]


def other_value(cls: type, f: Any) -> Any:
    """A valid value of field ``f`` that differs from its default."""
    m, default = meta(f), field_default(f)
    typ, _, seq = base_type(resolved_type(cls, f.name))
    if m.get("choices"):
        return next(c for c in m["choices"] if c != default)
    if typ is bool:
        return not default
    if seq:
        return tuple(default[:1]) if default else ("x",)
    lo, hi = m.get("min"), m.get("max")
    if typ is int:
        return (default or lo or 0) + 1
    if hi is not None:
        return ((default if default is not None else lo) + hi) / 2
    return (default or 1.0) * 1.5 + 0.25


def cli_args(f: Any, value: Any) -> list[str]:
    m = meta(f)
    if m.get("flag"):
        return [m["flag"]]
    if isinstance(value, bool):
        return [option_name(f)]
    if isinstance(value, tuple):
        return [a for v in value for a in (option_name(f), str(v))]
    return [option_name(f), str(value)]


def parse(command: click.Command, args: list[str]) -> dict[str, Any]:
    ctx = command.make_context(command.name, list(args), resilient_parsing=False)
    return dict(ctx.params)


def spec_for(family: str, params: dict[str, Any]) -> Any:
    return {"adapt": adapt_cmd._spec, "finetune": finetune_cmd._spec, "distill": distill_cmd._spec}[family](params)


CASES = [(fam, e.name, f.name) for fam, (_, reg, _) in FAMILIES.items() for e in reg.entries()
         if e.config is not None for f in fields(e.config)]


@pytest.mark.parametrize(("family", "name", "field"), CASES)
def test_every_method_option_is_settable_from_cli_yaml_and_python(family, name, field, tmp_path):
    command, registry, base = FAMILIES[family]
    entry = registry.entry(name)
    f = next(x for x in fields(entry.config) if x.name == field)
    value = other_value(entry.config, f)
    # the command line
    spec = spec_for(family, parse(command, [*base, *choose(family, name), *cli_args(f, value)]))
    assert getattr(entry.make_config(spec.options, strict=False), field) == value
    # YAML: the same option under its field name, then under its option name
    for key in (field, option_name(f).lstrip("-")):
        path = tmp_path / f"{key}.yaml"
        path.write_text(yaml.safe_dump({key: list(value) if isinstance(value, tuple) else value}))
        ctx = command.make_context(command.name, [*base, *choose(family, name)])
        params = {**ctx.params, **resolve_config(path, list(command.params), ctx)}
        assert getattr(entry.make_config(spec_for(family, params).options, strict=False), field) == value
    # Python
    assert getattr(entry.make_config({field: value}), field) == value


@pytest.mark.parametrize("family", list(FAMILIES))
def test_an_option_of_another_method_is_refused_in_one_line(family):
    command, registry, base = FAMILIES[family]
    owners = method_fields(registry)
    for cls, f, users in owners.values():
        outsider = next((e.name for e in registry.entries() if e.name not in users), None)
        if outsider is None:
            continue
        params = parse(command, [*base, *choose(family, outsider), *cli_args(f, other_value(cls, f))])
        with pytest.raises(TransferkitError, match=f"is an option of {users[0]}"):
            spec_for(family, params)


@pytest.mark.parametrize(("command", "spec_cls", "skip"), [
    (adapt_cmd.adapt_cmd, AdaptSpec, {"method", "batch_size", "options"}),
    (finetune_cmd.finetune_cmd, TrainConfig, set()),
    (meta_cmd.meta_train_cmd, MetaSpec, {"loss"}),
])
def test_family_spec_fields_are_command_line_options(command, spec_cls, skip):
    names = {p.name for p in command.params}
    for f in fields(spec_cls):
        if f.name in skip or meta(f).get("hidden"):
            continue
        assert f.name in names, f"{spec_cls.__name__}.{f.name} has no option on `{command.name}`"


@pytest.mark.parametrize("command", [adapt_cmd.adapt_cmd, finetune_cmd.finetune_cmd, finetune_cmd.train_cmd,
                                     distill_cmd.distill_cmd, meta_cmd.meta_train_cmd])
def test_no_two_options_of_a_command_share_a_name(command):
    names = [p.name for p in command.params]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_registries_list_their_entries_and_refuse_unknown_names():
    assert "adamatch" in ADAPT_METHODS and "bss" in REGULARIZERS and "dkd" in LOSSES and "reptile" in LEARNERS
    with pytest.raises(TransferkitError, match="unknown adaptation method 'dasn'; known adaptation methods: .*adamatch"):
        ADAPT_METHODS.entry("dasn")
    with pytest.raises(TransferkitError, match="dann has no option relative_threshold; its options: hidden"):
        ADAPT_METHODS.entry("dann").make_config({"relative_threshold": 0.5})


def test_a_new_method_is_one_registration(tmp_path):
    """A method registered anywhere appears on the command line built afterwards, with its options."""
    from dataclasses import dataclass

    from transferkit.commands.typed import method_options

    reg: Registry[Any] = Registry("toy method")

    @dataclass
    class ToyConfig:
        sharpness: float = option(2.0, "How sharp.", min=0, min_open=True)

    @reg.register("toy", "a toy", ToyConfig)
    class Toy:
        def __init__(self, sharpness: float):
            self.sharpness = sharpness

    @click.command("toy")
    @method_options(reg)
    def cmd(**kw: Any) -> None: ...

    params = parse(cmd, ["--sharpness", "3.5"])
    assert reg.create("toy", **{k: v for k, v in params.items() if v is not None}).sharpness == 3.5
    with pytest.raises(click.BadParameter):
        parse(cmd, ["--sharpness", "0"])
    with pytest.raises(TransferkitError, match="sharpness must be a number > 0, got -1"):
        reg.create("toy", sharpness=-1.0)


def test_rebuilt_command_line_keeps_inverted_flags_as_given():
    """--nproc re-launches the command from its parsed options: a flag that sets False must round-trip."""
    from transferkit.commands.common import _command_line

    base = ["--method", "cdan", "--source", "digits", "--target", "digits:test", "--nproc", "2"]
    for extra, present in (([], False), (["--cold-start", "--no-entropy-conditioning"], True)):
        ctx = adapt_cmd.adapt_cmd.make_context("adapt", [*base, *extra])
        with ctx:
            args = _command_line(ctx)
        assert ("--cold-start" in args) is present and ("--no-entropy-conditioning" in args) is present, args
        again = parse(adapt_cmd.adapt_cmd, args[1:])
        assert again["warm_start"] is (not present) and again["entropy_conditioning"] is (None if not present else False)


def test_methods_lists_every_family_and_refuses_an_unknown_one(capsys):
    from transferkit.cli import main
    from transferkit.commands.methods import FAMILIES, REGISTRIES, registry

    assert set(FAMILIES) == set(REGISTRIES)
    for family in REGISTRIES:
        assert main(["methods", family]) == 0
        out = capsys.readouterr().out
        assert all(f"  {name}" in out for name in registry(family).names()), family
    assert main(["methods", "adapt", "adamatch"]) == 0 and "--relative-threshold" in capsys.readouterr().out
    assert main(["methods", "nope"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown family 'nope'; choose one of: " + ", ".join(REGISTRIES)
