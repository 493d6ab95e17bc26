"""The shared checks of engines' ``options`` tables: same words, field names, every engine."""

from __future__ import annotations

import pytest

from backups.engines.clickhouse import client as clickhouse_client
from backups.engines.mongodb import settings as mongodb_settings
from backups.engines.mysql import settings as mysql_settings
from backups.engines.options import boolean, one_of, option_problems, pem_file, seconds
from backups.engines.postgresql import settings as postgresql_settings
from backups.engines.redis import engine as redis
from backups.plugins import Option

KNOWN = {
    "tls": Option("true for TLS", boolean),
    "timeout": Option("seconds", seconds(1, 60)),
    "ca": Option("a PEM file", pem_file),
    "mode": Option("a mode", one_of(("FAST", "SAFE"), fold_case=True)),
}


def test_it_refuses_unknown_options_listing_the_known_ones() -> None:
    assert option_problems({"colour": "red"}, KNOWN) == [
        ("options", "unknown option 'colour'; known options: ca, mode, timeout, tls")
    ]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"tls": "yes"}, ("options.tls", "must be true or false, got 'yes'")),
        ({"timeout": 0}, ("options.timeout", "must be a whole number of seconds from 1 to 60, got 0")),
        ({"timeout": True}, ("options.timeout", "must be a whole number of seconds from 1 to 60, got True")),
        ({"timeout": "5"}, ("options.timeout", "must be a whole number of seconds from 1 to 60, got '5'")),
        ({"ca": ""}, ("options.ca", "must be the path of a PEM file")),
        ({"ca": "/ca.pem\n[client]"}, ("options.ca", "must be the path of a PEM file")),
        ({"ca": "--help"}, ("options.ca", "must be the path of a PEM file")),
        ({"ca": "/ca\udc80.pem"}, ("options.ca", "must be the path of a PEM file")),
        ({"ca": "/" + "x" * 1000}, ("options.ca", "must be the path of a PEM file")),
        ({"mode": "slow"}, ("options.mode", "must be one of FAST, SAFE, got 'slow'")),
    ],
)
def test_it_names_bad_values_with_the_fix(options: dict[str, object], problem: tuple[str, str]) -> None:
    assert option_problems(options, KNOWN) == [problem]


def test_it_accepts_good_values() -> None:
    good = {"tls": False, "timeout": 60, "ca": "/etc/ssl/ca café.pem", "mode": "safe"}
    assert option_problems(good, KNOWN) == []


@pytest.mark.parametrize(
    "module", [clickhouse_client, mongodb_settings, mysql_settings, postgresql_settings, redis]
)
def test_it_gives_every_engine_option_help_and_a_check(module: object) -> None:
    options = module.OPTIONS  # type: ignore[attr-defined]
    assert options and all(
        isinstance(option, Option) and option.help and option.check for option in options.values()
    )
