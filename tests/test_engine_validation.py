"""Every engine refuses bad settings naming the field, and accepts good ones: ``validate`` on a
Connection, no server. One table for all engines; a case edits the engine's valid ``BASE``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from backups.engines import get_engine
from backups.engines.base import Connection, EngineError
from backups.engines.mongodb.settings import settings_for

BASE: dict[str, dict[str, Any]] = {
    "mysql": {"host": "db", "database": "app"},
    "redis": {"host": "redis.internal"},
    "clickhouse": {"host": "ch", "database": "app"},
    "mongodb": {"host": "db.example.org", "database": "shop"},
    "postgresql": {},
    "sqlite": {},
    "files": {},
}

# Engines whose settings builder must refuse the same bad settings, naming the field.
BUILDERS: dict[str, Callable[[Connection], object]] = {"mongodb": settings_for}


def connection(engine: str, fields: dict[str, Any]) -> Connection:
    return Connection(name="t", engine=engine, **{**BASE[engine], **fields})


def problem(engine: str, fields: dict[str, Any], field: str, fragment: str) -> Any:
    """A problem on ``field`` whose message contains ``fragment``."""
    return pytest.param(engine, fields, field, fragment, "contains", id=f"{engine}-{field}")


def exact(engine: str, fields: dict[str, Any], field: str, message: str) -> Any:
    """The problem (``field``, ``message``) among the problems."""
    return pytest.param(engine, fields, field, message, "exact", id=f"{engine}-{field}")


def only(engine: str, fields: dict[str, Any], field: str, message: str) -> Any:
    """The problem (``field``, ``message``) and no other."""
    return pytest.param(engine, fields, field, message, "only", id=f"{engine}-{field}")


# The postgresql cases share one Connection with seven bad values; each names one of its problems.
POSTGRESQL_BAD = {
    "database": "",
    "port": 70000,
    "options": {"sslmode": "sometimes", "connect_timeout": "10", "colour": "blue", "restore_check": "always"},
    "include_tables": [".t"],
}

BAD_SETTINGS = [
    # mysql
    problem("mysql", {"host": ""}, "host", "required"),
    problem("mysql", {"database": ""}, "database", "required"),
    problem("mysql", {"port": 70000}, "port", "between 1 and 65535"),
    problem("mysql", {"options": {"sslmode": "require"}}, "options", "unknown option 'sslmode'"),
    problem("mysql", {"options": {"ssl_mode": "sometimes"}}, "options.ssl_mode", "must be one of DISABLED"),
    problem("mysql", {"options": {"connect_timeout": "10"}}, "options.connect_timeout", "whole number of seconds"),
    problem("mysql", {"options": {"connect_timeout": True}}, "options.connect_timeout", "whole number of seconds"),
    problem("mysql", {"options": {"max_allowed_packet": "lots"}}, "options.max_allowed_packet", "number of bytes"),
    problem("mysql", {"options": {"default_character_set": "utf8; DROP"}}, "options.default_character_set", "character set"),
    problem("mysql", {"include_tables": ("a",), "exclude_tables": ("a",)}, "exclude_tables", "also listed in include_tables"),
    problem("mysql", {"password": "x\x00y"}, "password", "without NUL"),
    # redis
    exact("redis", {"host": ""}, "host", "required: the server's host name or IP address"),
    exact("redis", {"host": "/run/redis.sock"}, "host", "must be a host name or IP address (Unix sockets are not supported)"),
    exact("redis", {"port": 70000}, "port", "must be between 1 and 65535, got 70000"),
    exact("redis", {"database": "0"}, "database", "leave empty: a snapshot holds every logical database (options.databases chooses the ones a restore writes)"),
    exact("redis", {"user": "two words"}, "user", "must be an ACL user name without spaces or control characters"),
    exact("redis", {"include_tables": ("x",)}, "include_tables", "not used by the redis engine: a snapshot holds the whole server"),
    exact("redis", {"options": {"tls": "yes"}}, "options.tls", "must be true or false, got 'yes'"),
    exact("redis", {"options": {"ssl": True}}, "options", "unknown option 'ssl'; known options: connect_timeout, databases, replace, tls, tls_ca_file, tls_cert_file, tls_insecure, tls_key_file"),
    exact("redis", {"options": {"tls_ca_file": "/ca.pem"}}, "options.tls", "must be true when tls_ca_file, tls_cert_file, tls_key_file or tls_insecure is set"),
    exact("redis", {"options": {"tls": True, "tls_cert_file": "/c.pem"}}, "options.tls_key_file", "tls_cert_file and tls_key_file go together"),
    exact("redis", {"options": {"connect_timeout": 0}}, "options.connect_timeout", "must be a whole number of seconds from 1 to 3600, got 0"),
    exact("redis", {"options": {"databases": [0, 0]}}, "options.databases", "must be a list of distinct database numbers such as [0, 2], got [0, 0]"),
    exact("redis", {"options": {"replace": 1}}, "options.replace", "must be true or false, got 1"),
    # clickhouse
    problem("clickhouse", {"host": ""}, "host", "required"),
    problem("clickhouse", {"database": ""}, "database", "required"),
    problem("clickhouse", {"port": 0}, "port", "between 1 and 65535"),
    problem("clickhouse", {"options": {"sslmode": "require"}}, "options", "unknown option 'sslmode'; known options: ca_certificate"),
    problem("clickhouse", {"options": {"secure": "yes"}}, "options.secure", "true or false"),
    problem("clickhouse", {"options": {"connect_timeout": "10"}}, "options.connect_timeout", "whole number of seconds"),
    problem("clickhouse", {"options": {"part_size": 10}}, "options.part_size", "number of bytes from 1024"),
    problem("clickhouse", {"options": {"replace_existing": 1}}, "options.replace_existing", "true or false"),
    problem("clickhouse", {"options": {"ca_certificate": "/ca.pem"}}, "options.ca_certificate", "only used with secure = true"),
    problem("clickhouse", {"include_tables": ("a",), "exclude_tables": ("a",)}, "exclude_tables", "also listed in include_tables"),
    problem("clickhouse", {"password": "x\x01y"}, "password", "control characters"),
    # mongodb
    problem("mongodb", {"host": ""}, "host", "required"),
    problem("mongodb", {"host": "a.example,b.example"}, "host", "one host name or IP address"),
    problem("mongodb", {"host": "mongodb://db"}, "host", "one host name or IP address"),
    problem("mongodb", {"database": ""}, "database", "required"),
    problem("mongodb", {"database": "my.db"}, "database", "must not contain '.'"),
    problem("mongodb", {"database": "x" * 64}, "database", "shorter than 64 bytes"),
    problem("mongodb", {"port": 0}, "port", "between 1 and 65535"),
    problem("mongodb", {"user": "u"}, "password", "required when user is set"),
    problem("mongodb", {"password": "p"}, "password", "set the user name too"),
    problem("mongodb", {"user": "u", "password": "x\x00y"}, "password", "without NUL"),
    problem("mongodb", {"include_tables": ("a", "b")}, "include_tables", "list one collection"),
    problem("mongodb", {"include_tables": ("a",), "exclude_tables": ("b",)}, "exclude_tables", "not both"),
    problem("mongodb", {"exclude_tables": ("",)}, "exclude_tables", "not a valid collection name"),
    problem("mongodb", {"include_tables": ("system.buckets.w",)}, "include_tables", "time series collection itself"),
    problem("mongodb", {"options": {"authSource": "admin"}}, "options", "unknown option 'authSource'; known options: auth_database"),
    problem("mongodb", {"options": {"auth_database": "a b"}}, "options.auth_database", "must not contain ' '"),
    problem("mongodb", {"options": {"tls": "yes"}}, "options.tls", "true or false"),
    problem("mongodb", {"options": {"drop": 1}}, "options.drop", "true or false"),
    problem("mongodb", {"options": {"tls": False, "tls_ca_file": "/ca.pem"}}, "options.tls", "TLS files are set"),
    problem("mongodb", {"options": {"tls_ca_file": ""}}, "options.tls_ca_file", "path of a PEM file"),
    problem("mongodb", {"options": {"connect_timeout": "10"}}, "options.connect_timeout", "whole number of seconds"),
    problem("mongodb", {"options": {"connect_timeout": True}}, "options.connect_timeout", "whole number of seconds"),
    problem("mongodb", {"options": {"read_preference": "secondary_preferred"}}, "options.read_preference", "must be one of primary"),
    # postgresql
    problem("postgresql", POSTGRESQL_BAD, "database", "required"),
    problem("postgresql", POSTGRESQL_BAD, "port", "65535"),
    problem("postgresql", POSTGRESQL_BAD, "options.sslmode", "verify-full"),
    exact("postgresql", POSTGRESQL_BAD, "options.connect_timeout", "must be a whole number of seconds from 1 to 600, got '10'"),
    problem("postgresql", POSTGRESQL_BAD, "options", "unknown option 'colour'; known options: bin_dir, clean"),
    exact("postgresql", POSTGRESQL_BAD, "options.restore_check", "must be one of presence, exact, got 'always'"),
    problem("postgresql", POSTGRESQL_BAD, "include_tables", "schema.table"),
    # sqlite
    problem("sqlite", {}, "database", "required"),
    only("sqlite", {"database": "relative.db"}, "database", "must be an absolute path, got 'relative.db'"),
    # files
    only("files", {}, "paths", "required: a list of absolute directory paths"),
    only("files", {"paths": ("relative/dir",)}, "paths", "'relative/dir' must be an absolute path"),
    problem("files", {"paths": ("/",)}, "paths", "cannot be backed up as a whole"),
    only("files", {"paths": ("/srv/media",), "options": {"exclude": "*.tmp"}}, "options.exclude", "must be a list of glob patterns"),
]  # fmt: skip


@pytest.mark.parametrize(("engine", "fields", "field", "message", "match"), BAD_SETTINGS)
def test_it_names_the_field_of_a_bad_setting(
    engine: str, fields: dict[str, Any], field: str, message: str, match: str
) -> None:
    problems = get_engine(engine).validate(connection(engine, fields))
    if match == "only":
        assert problems == [(field, message)]
    elif match == "exact":
        assert (field, message) in problems, problems
    else:
        assert any(name == field and message in text for name, text in problems), problems
    if engine in BUILDERS:
        with pytest.raises(EngineError, match=field):
            BUILDERS[engine](connection(engine, fields))


GOOD_SETTINGS = [
    pytest.param(
        "mysql",
        {
            "host": "localhost",
            "options": {
                "ssl_mode": "verify_identity",
                "ssl_ca": "/etc/ssl/ca.pem",
                "connect_timeout": 5,
                "default_character_set": "utf8mb4",
                "max_allowed_packet": "64M",
            },
        },
        id="mysql",
    ),
    pytest.param(
        "redis",
        {
            "host": "10.0.0.5",
            "port": 6380,
            "user": "backup",
            "password": "x",
            "options": {
                "tls": True,
                "tls_ca_file": "/ca.pem",
                "tls_cert_file": "/c.pem",
                "tls_key_file": "/k.pem",
                "connect_timeout": 5,
                "replace": True,
                "databases": [0, 3],
            },
        },
        id="redis",
    ),
    pytest.param(
        "clickhouse",
        {
            "options": {
                "secure": True,
                "ca_certificate": "/etc/ssl/ca.pem",
                "connect_timeout": 5,
                "part_size": 1 << 20,
            }
        },
        id="clickhouse",
    ),
    *(
        pytest.param(
            "mongodb",
            {
                "host": host,
                "user": "backup",
                "password": "pw",
                "exclude_tables": ("logs",),
                "options": {
                    "auth_database": "admin",
                    "tls": True,
                    "tls_ca_file": "/etc/ssl/ca.pem",
                    "tls_certificate_key_file": "/etc/ssl/client.pem",
                    "tls_certificate_key_file_password": "k",
                    "drop": False,
                    "connect_timeout": 5,
                    "read_preference": "nearest",
                },
            },
            id=f"mongodb-{host}",
        )
        for host in ("localhost", "127.0.0.1", "::1", "mongo-0.mongo.svc.cluster.local", "db_1")
    ),
    pytest.param("sqlite", {"database": "/srv/app.sqlite3"}, id="sqlite"),
    pytest.param(
        "files", {"paths": ("/srv/media", "/srv/static"), "options": {"include": ["*.jpg"]}}, id="files"
    ),
]


@pytest.mark.parametrize(("engine", "fields"), GOOD_SETTINGS)
def test_it_has_no_problem_with_good_settings(engine: str, fields: dict[str, Any]) -> None:
    assert get_engine(engine).validate(connection(engine, fields)) == []
