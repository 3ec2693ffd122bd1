"""The ``transferkit`` command line: one sub-command per family.

User mistakes print one line (``error: ...``) and exit with status 2; a loss
that turns NaN exits with status 3. No tracebacks for either.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings

import click

from . import __version__
from .errors import NonFiniteLossError, TransferkitError

# each family module exposes COMMANDS, a list of click commands
FAMILY_MODULES = ["finetune", "demo", "distill", "adapt", "meta", "analysis", "distributed"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="transferkit")
def cli() -> None:
    """transferkit: knowledge transfer between deep learning models.

    \b
    Families:
      train / finetune / eval / predict   parameter transfer (fine-tuning, linear probe, L2-SP, LwF, BSS)
      distill                             knowledge distillation (KD, FitNet, AT, RKD, DKD)
      adapt                               unsupervised domain adaptation (DAN, CORAL, DANN, ADDA, CDAN, MCC)
      meta / few-shot                     meta-learning (MAML, ANIL, Reptile, Prototypical Networks)
      rank / gap / report                 transferability, domain gap, reports
    Start with `transferkit demo`.
    """


for _name in FAMILY_MODULES:
    if importlib.util.find_spec(f"transferkit.commands.{_name}") is not None:
        for _cmd in importlib.import_module(f"transferkit.commands.{_name}").COMMANDS:
            cli.add_command(_cmd)


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
    except click.ClickException as exc:
        exc.show()
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
