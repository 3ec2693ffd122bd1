"""A registry per family: a method registers itself, with its typed config, in its own file.

>>> ADAPT_METHODS = Registry("adaptation method")
>>> @ADAPT_METHODS.register("dann", "domain-adversarial, gradient reversal (Ganin et al. 2016)", DANNConfig)
... class DANN(AdaptMethod): ...
>>> ADAPT_METHODS.create("dann", model, schedule, hidden=256)

The command line lists the names and descriptions from here (``transferkit methods``), adds
each config's fields as options, and YAML accepts the same names; nothing else needs editing
when a method is added.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import TransferkitError, unknown_name
from ..options import check, fields, from_mapping

T = TypeVar("T")


@dataclass
class Entry(Generic[T]):
    """One registered thing: its name, a one-line description, the class and its config type."""

    name: str
    doc: str
    obj: T
    config: type | None = None

    def make_config(self, values: dict[str, Any] | None = None, strict: bool = True, **kw: Any) -> Any:
        """The checked config from option values; with ``strict`` a key that is not an option is refused."""
        given = {k.replace("-", "_") for k in {**(values or {}), **kw}}
        unknown = sorted(given - set(self.options()))
        if unknown and strict:
            own = ", ".join(self.options()) or "none"
            raise TransferkitError(f"{self.name} has no option {', '.join(unknown)}; its options: {own}")
        if self.config is None:
            return None
        return check(from_mapping(self.config, {**(values or {}), **kw}), f"{self.name}: ")

    def options(self) -> list[str]:
        """The names of this entry's own options."""
        return [f.name for f in fields(self.config)] if self.config is not None else []


class Registry(Generic[T]):
    """Names -> :class:`Entry`; ``register`` is a class decorator (or a plain call)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, doc: str, config: type | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = Entry(name, doc, obj, config)
            return obj

        return deco

    def add(self, name: str, doc: str, obj: T, config: type | None = None) -> T:
        return self.register(name, doc, config)(obj)

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise unknown_name(self.kind, name, self._entries)
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        return self.entry(name).obj

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def docs(self) -> dict[str, str]:
        """``{name: one-line description}`` in registration order."""
        return {k: e.doc for k, e in self._entries.items()}

    def items(self) -> list[tuple[str, T]]:
        return [(k, e.obj) for k, e in self._entries.items()]

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def config_types(self) -> list[type]:
        """The distinct config dataclasses, in registration order."""
        seen: list[type] = []
        for e in self._entries.values():
            if e.config is not None and e.config not in seen:
                seen.append(e.config)
        return seen

    def create(self, name: str, *args: Any, config: Any = None, **kw: Any) -> Any:
        """``obj(*args, **config_fields)``: build the registered class with its checked config."""
        entry = self.entry(name)
        cfg = config if config is not None else entry.make_config(**kw)
        options = {f.name: getattr(cfg, f.name) for f in fields(type(cfg))} if cfg is not None else {}
        return entry.obj(*args, **options)  # type: ignore[operator]


def import_submodules(package: str) -> None:
    """Import every module of ``package`` so that each registers what it defines.

    A family's ``__init__`` calls this last: a new method file dropped into the family's
    folder registers itself without any other file being edited.
    """
    import importlib
    import pkgutil

    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
