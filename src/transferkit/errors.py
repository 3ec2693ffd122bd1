"""One exception type for user mistakes.

Anything a user can get wrong (a missing file, an unknown name, a shape that
does not fit) raises :class:`TransferkitError` with a message that says what
was wrong and how to fix it. The command line prints that one line and exits
with status 2; no traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class TransferkitError(Exception):
    """A user-facing error: the message is the whole story."""


class NonFiniteLossError(TransferkitError):
    """The training loss became NaN or infinite."""


def unknown_name(kind: str, name: str, known: Iterable[str]) -> TransferkitError:
    """Error for a name that is not in a registry, listing those that are."""
    known = sorted(known)
    return TransferkitError(f"unknown {kind} '{name}'; known {kind}s: {', '.join(known)}")
