"""The ``transferkit`` command line: one sub-command per family.

User mistakes print one line (``error: ...``) and exit with status 2; a loss
that turns NaN exits with status 3. No tracebacks for either.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import click

from . import __version__
from .errors import NonFiniteLossError, TransferkitError

# Every sub-command: name -> (module in transferkit.commands, attribute, short help for --help).
# The module is imported only when its command runs, so `--version` and `--help` do not
# import torch. Each module's COMMANDS list must match this table (tests/test_cli_startup.py).
COMMAND_TABLE: dict[str, tuple[str, str, str]] = {
    "train": ("finetune", "train_cmd", "Train a model from scratch (e.g. a source model)."),
    "finetune": ("finetune", "finetune_cmd", "Transfer a trained model to a labelled target set."),
    "eval": ("finetune", "eval_cmd", "Accuracy, loss and per-class accuracy on labelled data."),
    "predict": ("finetune", "predict_cmd", "Write predictions and class probabilities to a CSV."),
    "datasets": ("finetune", "datasets_cmd", "List the named datasets (and the sources you can bring)."),
    "models": ("finetune", "models_cmd", "List the architectures."),
    "demo": ("demo", "demo_cmd", "Train on MNIST, transfer to digits with few labels."),
    "distill": ("distill", "distill_cmd", "Distil a large teacher into a small student."),
    "export": ("distill", "export_cmd", "Export a model to TorchScript or ONNX and check it."),
    "adapt": ("adapt", "adapt_cmd", "Adapt a model to an unlabelled target domain."),
    "meta": ("meta", "meta_group", "Meta-learning: MAML, ANIL, Reptile, Prototypical Networks."),
    "few-shot": ("meta", "few_shot_cmd", "Label query images from a few examples of new classes."),
    "rank": ("analysis", "rank_cmd", "Rank pretrained models for a target task (LogME, LEEP...)."),
    "gap": ("analysis", "gap_cmd", "How far apart two domains are: A-distance, MMD, t-SNE."),
    "report": ("analysis", "report_cmd", "One self-contained HTML report of one or more runs."),
    "methods": ("methods", "methods_cmd", "List each family's registered methods and their options."),
}


def _shorten(text: str, limit: int) -> str:
    """``text`` cut at a word to at most ``limit`` characters (``...`` marks a cut)."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 3, 0)].rsplit(" ", 1)[0].rstrip(" ,:(") + "..."


class LazyGroup(click.Group):
    """A group that imports a sub-command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMAND_TABLE) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_TABLE:
            module, attr, _ = COMMAND_TABLE[cmd_name]
            self.add_command(getattr(importlib.import_module(f"transferkit.commands.{module}"), attr), cmd_name)
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands with the table's short help, without importing them."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            if name in COMMAND_TABLE:
                rows.append((name, _shorten(COMMAND_TABLE[name][2], limit)))
            elif not self.commands[name].hidden:
                rows.append((name, self.commands[name].get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="transferkit")
def cli() -> None:
    """transferkit: knowledge transfer between deep learning models.

    \b
    Families (`transferkit methods FAMILY` lists each one's registered methods and their options):
      train / finetune / eval / predict   parameter transfer (fine-tuning, linear probe, regularizers)
      distill                             knowledge distillation (losses composed by name and weight)
      adapt                               unsupervised domain adaptation (deep and shallow methods)
      meta / few-shot                     meta-learning (gradient-based and metric learners)
      rank / gap / report                 transferability, domain gap, reports
    Start with `transferkit demo`.
    """


def _formatwarning(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning user errors into one clear line."""
    warnings.formatwarning = _formatwarning
    try:
        cli.main(args=argv, prog_name="transferkit", standalone_mode=False)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.UsageError as exc:  # a wrong option or value: one line, like every other user mistake
        where = f" (see `transferkit {exc.ctx.command_path.partition(' ')[2]} --help`)" if exc.ctx and " " in exc.ctx.command_path else ""
        print(f"error: {exc.format_message()}{where}", file=sys.stderr)
        return exc.exit_code
    except click.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except TransferkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
