"""The command line starts fast: commands are imported only when they run."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import click

import transferkit.commands
from transferkit.cli import COMMAND_TABLE, cli, main


def _command_modules() -> dict[str, list[click.Command]]:
    """Every module in transferkit.commands that exposes COMMANDS."""
    found = {}
    for info in pkgutil.iter_modules(transferkit.commands.__path__):
        module = importlib.import_module(f"transferkit.commands.{info.name}")
        if hasattr(module, "COMMANDS"):
            found[info.name] = list(module.COMMANDS)
    return found


def test_version_does_not_import_torch():
    code = (
        "import sys; from transferkit.cli import main; rc = main(['--version']); "
        "print(rc, 'torch' in sys.modules, 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert "0.1.0" in out and out.strip().splitlines()[-1] == "0 False False", out


def test_import_transferkit_does_not_import_torch():
    code = "import sys, transferkit; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == "False", out


def test_table_matches_the_command_modules():
    modules = _command_modules()
    names = {cmd.name: (module, cmd) for module, cmds in modules.items() for cmd in cmds}
    assert sum(len(cmds) for cmds in modules.values()) == len(names), "two commands share a name"
    assert set(COMMAND_TABLE) == set(names)
    ctx = click.Context(cli)
    for name, (module, _attr, short_help) in COMMAND_TABLE.items():
        cmd = cli.get_command(ctx, name)
        assert cmd is names[name][1] and cmd.name == name and module == names[name][0], name
        assert short_help and len(short_help) <= 64, name
    assert cli.get_command(ctx, "no-such-command") is None


def test_help_lists_every_command(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # wide enough that no short help is cut
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = out.split("Commands:", 1)[1]
    for name, (_module, _attr, short_help) in COMMAND_TABLE.items():
        assert f"  {name} " in listed and short_help in listed, name


def test_sub_command_help_and_unknown_command(capsys):
    assert main(["meta", "--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err
