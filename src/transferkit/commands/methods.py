"""``transferkit methods``: what each family's registry holds, and each entry's own options."""

from __future__ import annotations

from typing import Any

import click

from ..errors import TransferkitError

FAMILIES = {
    "finetune": "fine-tuning regularizers (--regularizer)",
    "distill": "distillation losses (--loss NAME=WEIGHT)",
    "adapt": "deep domain-adaptation methods (--method)",
    "meta": "meta-learners (meta train --method)",
    "source-free": "source-free adaptation of a trained model (adapt --method NAME --init RUN, no --source)",
    "test-time": "test-time adaptation while predicting (predict --adapt NAME)",
}


# family -> (module, registry attribute), imported only when listed
REGISTRIES = {
    "finetune": ("transferkit.finetune", "REGULARIZERS"),
    "distill": ("transferkit.distill", "LOSSES"),
    "adapt": ("transferkit.adapt", "ADAPT_METHODS"),
    "meta": ("transferkit.meta", "LEARNERS"),
    "source-free": ("transferkit.adapt.shot", "SOURCE_FREE_METHODS"),
    "test-time": ("transferkit.adapt.tta", "TTA_METHODS"),
}


def registry(family: str) -> Any:
    """The registry of ``family`` (imported only when asked for)."""
    import importlib

    if family not in REGISTRIES:
        raise TransferkitError(f"unknown family '{family}'; choose one of: {', '.join(REGISTRIES)}")
    module, attr = REGISTRIES[family]
    return getattr(importlib.import_module(module), attr)


@click.command("methods")
@click.argument("family", required=False)
@click.argument("name", required=False)
def methods_cmd(family: str | None, name: str | None) -> None:
    """List the registered methods of each family, or one method's own options.

    \b
    Examples:
      transferkit methods                  # every family, every method
      transferkit methods adapt            # the adaptation methods and their options
      transferkit methods adapt adamatch   # one method: its options, defaults and bounds
    """
    from .typed import describe_entry

    families = [family] if family else list(FAMILIES)
    for fam in families:
        reg = registry(fam)
        if name:
            click.echo(describe_entry(reg, name))
            continue
        click.echo(f"{fam}: {FAMILIES[fam]}")
        for entry in reg.entries():
            click.echo(f"  {entry.name:<12} {entry.doc}")
            if family:
                for line in describe_entry(reg, entry.name).splitlines()[1:]:
                    click.echo(f"    {line.strip()}")


COMMANDS = [methods_cmd]
