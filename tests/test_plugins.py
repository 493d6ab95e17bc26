"""The plugin mechanism shared by engines, storages and notifiers: ``Option``,
``validate_options`` and ``Registry`` (``backups.plugins``, standard library only)."""

from __future__ import annotations

import subprocess
import sys
from functools import partial
from typing import Any

import pytest

from backups.notifiers import NOTIFIER_KINDS, NotifierError, notifier_class, notifier_kind_choices
from backups.plugins import Option, Registry, import_path, validate_options
from backups.storages import STORAGE_KINDS, StorageError, storage_class, storage_kind_choices


def positive(value: Any) -> str | None:
    return None if isinstance(value, int) and value > 0 else f"must be positive, got {value!r}"


TYPED = {
    "host": Option(str, "the server's host name", required=True),
    "port": Option(int, "the port (default 21)"),
    "tls": Option(bool, "use TLS"),
    "timeout": Option(float, "seconds"),
    "to": Option(list, "the recipients", required=True),
    "mode": Option(str, "a mode", choices=("fast", "safe")),
    "token": Option(str, "a token", secret=True),
    "retries": Option(int, "retries", check=positive),
}
CHECKED = {"tls": Option("true for TLS", lambda value: None if isinstance(value, bool) else "no")}


def test_it_makes_one_shape_of_the_two_spellings() -> None:
    typed = Option(str, "a token", required=True, secret=True, path=True, choices=("a",), default="a")
    assert (typed.type, typed.help, typed.required, typed.secret, typed.path) == (
        str,
        "a token",
        True,
        True,
        True,
    )
    assert (typed.choices, typed.default, typed.check) == (("a",), "a", None)
    checked = Option("seconds", positive)
    assert (checked.type, checked.help, checked.check, checked.required, checked.default) == (
        None,
        "seconds",
        positive,
        False,
        None,
    )
    assert Option(int, "n") == Option(int, "n") and Option(int, "n") != Option(int, "m")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Option("help"),  # type: ignore[call-overload]
        lambda: Option("help", positive, required=True),  # type: ignore[call-overload]
        lambda: Option(str, "help", colour="red"),  # type: ignore[call-overload]
    ],
)
def test_it_refuses_other_spellings(make: Any) -> None:
    with pytest.raises(TypeError):
        make()


def test_it_accepts_good_typed_options() -> None:
    good = {
        "host": "db",
        "port": 21,
        "tls": True,
        "timeout": 5,
        "to": ["a@b.c"],
        "mode": "safe",
        "retries": 2,
    }
    assert validate_options(good, TYPED, family="ftp storage") == []


@pytest.mark.parametrize(
    ("options", "problems"),
    [
        (
            {"colour": "red"},
            [
                (
                    "colour",
                    "unknown option for the ftp storage kind; known: host, mode, port, retries, timeout, tls, to, token",
                )
            ],
        ),
        ({"port": "21"}, [("port", "must be a whole number")]),
        ({"port": True}, [("port", "must be a whole number")]),
        ({"tls": 1}, [("tls", "must be true or false")]),
        ({"timeout": False}, [("timeout", "must be a number")]),
        ({"to": "a@b.c"}, [("to", "must be a list")]),
        ({"mode": "slow"}, [("mode", "must be one of fast, safe, got 'slow'")]),
        ({"retries": 0}, [("retries", "must be positive, got 0")]),
        ({"retries": "0"}, [("retries", "must be a whole number")]),
        ({"port": None, "mode": None}, []),  # None is absent: only a required option minds
        ({"host": None}, [("host", "required: the server's host name")]),
        (
            {"host": "", "to": []},
            [("host", "required: the server's host name"), ("to", "required: the recipients")],
        ),
    ],
)
def test_it_reports_typed_problems_under_the_bare_name(
    options: dict[str, Any], problems: list[tuple[str, str]]
) -> None:
    base = {"host": "db", "to": ["a@b.c"]}
    assert validate_options({**base, **options}, TYPED, family="ftp storage") == problems


def test_it_reports_missing_required_options_after_the_others() -> None:
    assert validate_options({"port": "x"}, TYPED, family="email notifier") == [
        ("port", "must be a whole number"),
        ("host", "required: the server's host name"),
        ("to", "required: the recipients"),
    ]


def test_it_takes_the_values_that_count_as_missing_from_empty() -> None:
    assert validate_options({"host": [], "to": ["a"]}, TYPED, family="s3 storage", empty=(None, "")) == [
        ("host", "must be a string")
    ]
    assert validate_options({"host": [], "to": ["a"]}, TYPED, family="webhook notifier") == [
        ("host", "must be a string"),
        ("host", "required: the server's host name"),
    ]


def test_it_says_none_for_a_kind_without_options() -> None:
    assert validate_options({"x": 1}, {}, family="local storage") == [
        ("x", "unknown option for the local storage kind; known: none")
    ]


def test_it_names_problems_inside_the_table_when_given_one() -> None:
    assert validate_options({"tls": "yes", "colour": "red"}, CHECKED, table="options") == [
        ("options.tls", "no"),
        ("options", "unknown option 'colour'; known options: tls"),
    ]


def test_it_shows_none_to_a_check_too() -> None:
    assert validate_options({"tls": None}, CHECKED, table="options") == [("options.tls", "no")]


class Plugin:
    label = "A plugin"


class FamilyError(Exception):
    pass


def registry(**kwargs: Any) -> Registry[Plugin]:
    paths = {"zeta": f"{__name__}.Plugin", "alpha": "backups.plugins.Option"}
    return Registry("gadget kind", paths, labels={"alpha": "Alpha"}, error=FamilyError, **kwargs)


def test_it_lists_registry_keys_in_order_or_sorted() -> None:
    assert registry().keys() == ["zeta", "alpha"]
    assert registry(sort=True).keys() == ["alpha", "zeta"]
    assert "zeta" in registry() and "omega" not in registry()


def test_it_loads_registry_entries_lazily_and_caches_them() -> None:
    plugins = registry()
    assert plugins._loaded == {}
    assert plugins.load("zeta") is Plugin
    assert plugins.load("zeta") is Plugin
    assert plugins._loaded == {f"{__name__}.Plugin": Plugin}


def test_it_takes_choice_labels_from_labels_else_the_class_label() -> None:
    assert registry().choices() == [("zeta", "A plugin"), ("alpha", "Alpha")]


def test_it_raises_the_family_error_for_unknown_keys() -> None:
    with pytest.raises(FamilyError, match=r"^unknown gadget kind 'omega'; use one of zeta, alpha$"):
        registry().load("omega")
    listed = registry(unknown="unknown {family} {key!r}; available: {keys}", sort=True)
    with pytest.raises(FamilyError, match=r"^unknown gadget kind 'omega'; available: alpha, zeta$"):
        listed.load("omega")


def test_it_accepts_any_callable_as_error() -> None:
    plugins: Registry[Any] = Registry("notifier kind", {}, error=partial(NotifierError, retryable=False))
    with pytest.raises(NotifierError) as caught:
        plugins.load("x")
    assert caught.value.retryable is False


def test_it_reads_extra_entries_at_every_look_up() -> None:
    extra: dict[str, str] = {}
    plugins = registry(extra=lambda: extra, sort=True)
    assert plugins.keys() == ["alpha", "zeta"]
    extra["beta"] = f"{__name__}.FamilyError"
    assert plugins.keys() == ["alpha", "beta", "zeta"]
    assert plugins.load("beta") is FamilyError


def test_it_adds_an_entry_on_register() -> None:
    plugins = registry()
    plugins.register("beta", f"{__name__}.Plugin", label="Beta")
    assert plugins.choices()[-1] == ("beta", "Beta")
    assert plugins.load("beta") is Plugin


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("Plugin", "Plugin doesn't look like a module path"),
        (f"{__name__}.Missing", f'Module "{__name__}" does not define a "Missing" attribute/class'),
    ],
)
def test_it_raises_import_error_for_bad_paths(path: str, message: str) -> None:
    with pytest.raises(ImportError, match=f"^{message}$"):
        import_path(path)
    with pytest.raises(ModuleNotFoundError):
        import_path("backups.no_such_module.Plugin")


def test_it_imports_the_plugins_module_without_django() -> None:
    code = "import sys, backups.plugins; assert not [m for m in sys.modules if m.startswith('django')]"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_it_keeps_the_public_shape_of_the_storage_and_notifier_registries() -> None:
    assert STORAGE_KINDS == ("local", "s3", "sftp", "ftp", "gcs", "azure")
    assert storage_kind_choices() == [
        (kind, kind.upper() if len(kind) <= 3 else kind.capitalize()) for kind in STORAGE_KINDS
    ]
    with pytest.raises(
        StorageError, match=r"^unknown storage kind 'x'; use one of local, s3, sftp, ftp, gcs, azure$"
    ):
        storage_class("x")
    assert NOTIFIER_KINDS == ("email", "webhook", "slack", "teams", "audit")
    assert dict(notifier_kind_choices())["teams"] == "Microsoft Teams"
    with pytest.raises(NotifierError, match=r"^unknown notifier kind 'x'; use one of email, ") as caught:
        notifier_class("x")
    assert caught.value.retryable is False


def test_it_keeps_the_public_shape_of_the_engine_registry(settings: Any) -> None:
    from backups.engines import EngineError, engine_choices, engine_keys, engine_paths, get_engine

    assert engine_keys() == sorted(engine_keys()) and "sqlite" in engine_keys()
    assert ("postgresql", "PostgreSQL") in engine_choices()
    with pytest.raises(EngineError, match=r"^unknown engine 'x'; available: clickhouse, external, files, "):
        get_engine("x")
    settings.BACKUPSITE_ENGINES = {"aaa": "backups.engines.sqlite.SQLiteEngine"}
    assert engine_keys()[0] == "aaa" and engine_paths()["aaa"] == "backups.engines.sqlite.SQLiteEngine"
    assert ("aaa", "SQLite") in engine_choices()
