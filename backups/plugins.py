"""The one plugin mechanism of engines, storages and notifiers: the option spec, the option
check, and the registry of kinds.

Standard library only, so a plugin may import it without Django. The dependency rule: a plugin
knows this module, its family's base module, the standard library and its client library;
never the models, services, tasks, admin or configuration loader.

* :class:`Option` declares one option. Storages and notifiers write ``Option(type, help, ...)``
  (a typed option: the type, then ``required``, ``secret``, ``path``, ``choices``,
  ``default``); engines write ``Option(help, check)`` (a check returns ``None`` for a good
  value, else the message).
* :func:`validate_options` checks an options table against ``{name: Option}`` and returns
  ``(field, message)`` pairs.
* :class:`Registry` maps keys to dotted paths of classes, imported only when first loaded (like
  Django's backends), so listing the kinds does not import every client library.
"""

from __future__ import annotations

import builtins
import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

Check = Callable[[Any], "str | None"]

TYPE_WORDS: dict[type, str] = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    list: "a list",
}
EMPTY: tuple[Any, ...] = (None, "", [])  # the values a required option must not have


@dataclass(frozen=True, init=False)
class Option:
    """One option of a plugin: its help and either a type (with the typed flags) or a check."""

    help: str
    type: builtins.type | None = None  # None: only ``check`` judges the value
    check: Check | None = None
    required: bool = False
    secret: bool = False  # must be a ${ENV}/${file:} reference in configuration
    path: bool = False  # a local file; relative paths in TOML are relative to the TOML file
    choices: tuple[str, ...] = ()
    default: Any = None

    @overload
    def __init__(self, help: str, check: Check, /) -> None: ...

    @overload
    def __init__(
        self,
        type: builtins.type,
        help: str,
        /,
        *,
        required: bool = False,
        secret: bool = False,
        path: bool = False,
        choices: tuple[str, ...] = (),
        default: Any = None,
        check: Check | None = None,
    ) -> None: ...

    def __init__(self, first: Any, second: Any, /, **flags: Any) -> None:
        if isinstance(first, builtins.type):  # Option(type, help, ...)
            fields = {"type": first, "help": second, **flags}
        elif isinstance(first, str) and callable(second) and not flags:  # Option(help, check)
            fields = {"help": first, "check": second}
        else:
            raise TypeError("write Option(type, help, ...) or Option(help, check)")
        known = {spec.name: spec.default for spec in dataclasses.fields(Option)}
        if unexpected := fields.keys() - known.keys():
            raise TypeError(f"Option() got an unexpected keyword argument {sorted(unexpected)[0]!r}")
        for name, default in known.items():
            object.__setattr__(self, name, fields.get(name, default))

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (``None`` when it is good). For a typed option ``None``
        means absent (:func:`validate_options` checks ``required``); a check sees every value."""
        if self.type is not None:
            if value is None:
                return None
            if not matches(value, self.type):
                return f"must be {TYPE_WORDS.get(self.type, self.type.__name__)}"
            if self.choices and value not in self.choices:
                return f"must be one of {', '.join(self.choices)}, got {value!r}"
        return self.check(value) if self.check is not None else None


def matches(value: Any, expected: builtins.type) -> bool:
    """Whether ``value`` is of the option type ``expected``: a bool is only true or false (never
    a number), and a whole number is a good ``float``."""
    if isinstance(value, bool):
        return expected is bool
    if expected is float:
        return isinstance(value, int | float)
    return isinstance(value, expected)


def validate_options(
    options: Mapping[str, Any],
    known: Mapping[str, Option],
    *,
    family: str = "",
    table: str = "",
    empty: tuple[Any, ...] = EMPTY,
) -> list[tuple[str, str]]:
    """``(field, message)`` for every problem of ``options``; empty when they are usable.

    With ``table`` (engines: ``"options"``) each problem is reported as ``TABLE.NAME`` and an
    unknown name under ``TABLE`` itself: "unknown option 'x'; known options: a, b". Without it
    (storages, notifiers: their options are keys of the plugin's own table) each problem is
    reported under the bare name, an unknown one as "unknown option for the FAMILY kind; known:
    a, b" (``family``, e.g. ``"s3 storage"``). Then every ``required`` option that is missing
    or one of the ``empty`` values is reported as "required: HELP".
    """
    problems: list[tuple[str, str]] = []
    for name, value in options.items():
        option = known.get(name)
        if option is None:
            names = ", ".join(sorted(known))
            if table:
                problems.append((table, f"unknown option {name!r}; known options: {names}"))
            else:
                problems.append((name, f"unknown option for the {family} kind; known: {names or 'none'}"))
        elif (message := option.problem(value)) is not None:
            problems.append((f"{table}.{name}" if table else name, message))
    for name, option in known.items():
        if option.required and options.get(name) in empty:
            problems.append((f"{table}.{name}" if table else name, f"required: {option.help}"))
    return problems


T = TypeVar("T")


def import_path(path: str) -> Any:
    """The object at the dotted ``path`` (``package.module.Name``); ImportError if there is none
    (the standard-library equivalent of Django's ``import_string``)."""
    module_path, _, name = path.rpartition(".")
    if not module_path:
        raise ImportError(f"{path} doesn't look like a module path")
    module = importlib.import_module(module_path)
    try:
        return getattr(module, name)
    except AttributeError:
        raise ImportError(f'Module "{module_path}" does not define a "{name}" attribute/class') from None


class Registry(Generic[T]):
    """The kinds of one plugin family: key -> dotted path of the class, imported on first load.

    ``family`` names the family in messages ("engine", "storage kind"); ``error`` builds the
    exception for an unknown key from its message, worded by ``unknown`` (a format string with
    ``family``, ``key`` and ``keys``). ``extra`` returns more entries, read at every look-up
    (engines: the ``BACKUPSITE_ENGINES`` setting); :meth:`register` adds one for good. Keys
    are listed in registration order, or sorted with ``sort``.
    """

    def __init__(
        self,
        family: str,
        paths: Mapping[str, str],
        *,
        labels: Mapping[str, str] | None = None,
        error: Callable[[str], Exception] = LookupError,
        unknown: str = "unknown {family} {key!r}; use one of {keys}",
        extra: Callable[[], Mapping[str, str]] | None = None,
        sort: bool = False,
    ) -> None:
        self.family = family
        self._paths = dict(paths)
        self.labels = dict(labels or {})
        self.error = error
        self.unknown = unknown
        self.extra = extra
        self.sort = sort
        self._loaded: dict[str, type[T]] = {}

    def register(self, key: str, path: str, label: str | None = None) -> None:
        self._paths[key] = path
        if label is not None:
            self.labels[key] = label

    def paths(self) -> dict[str, str]:
        """Every key's dotted path (``extra`` overrides the built-in ones)."""
        return {**self._paths, **(self.extra() if self.extra is not None else {})}

    def keys(self) -> list[str]:
        keys = self.paths()
        return sorted(keys) if self.sort else list(keys)

    def __contains__(self, key: object) -> bool:
        return key in self.paths()

    def path(self, key: str) -> str:
        """The dotted path of ``key``; raises ``error`` naming the keys there are."""
        try:
            return self.paths()[key]
        except KeyError:
            keys = ", ".join(self.keys())
            raise self.error(self.unknown.format(family=self.family, key=key, keys=keys)) from None

    def load(self, key: str) -> type[T]:
        """The class of ``key``, imported the first time (ImportError if it cannot be)."""
        path = self.path(key)
        if path not in self._loaded:
            self._loaded[path] = import_path(path)
        return self._loaded[path]

    def label(self, key: str) -> str:
        """The human name of ``key``: from ``labels``, else the class's ``label`` (imported)."""
        label = self.labels.get(key)
        return label if label else str(getattr(self.load(key), "label", key))

    def choices(self) -> list[tuple[str, str]]:
        return [(key, self.label(key)) for key in self.keys()]
