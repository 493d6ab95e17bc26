"""The MongoDB engine: ``mongodump --archive`` out, ``mongorestore --archive`` in.

Two kinds of tests live here.

- Tests that need no server run everywhere: the ``--config`` file and argv the engine builds,
  settings validation, the wording of the tools' errors, the system check for missing tools,
  and the archive reader. The archive tests read archives built here byte for byte from the
  documented format (mongo-tools' ``common/archive/spec.md``) with pymongo's BSON encoder.
  They are format tests: they prove the reader against the format, not that the engine and the
  real tools agree, which only the round trip below can prove.
- Tests against a real ``mongod`` started by the suite on a free loopback port (with
  authorization on, users created first) and the real ``mongodump``/``mongorestore``. MongoDB is
  not packaged in the registries this project reaches (Debian, PyPI, npm), so these are skipped,
  naming the missing programs, wherever those are not on PATH. To run them, install MongoDB
  Community Server and the Database Tools from MongoDB's repository or tarballs, put ``mongod``,
  ``mongodump`` and ``mongorestore`` on PATH and run ``make test`` (or this file alone).
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import signal
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import bson
import pytest
import yaml
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from backups import services
from backups.engines import get_engine
from backups.engines.base import Connection, DumpOptions, EngineError, RestoreOptions
from backups.engines.mongodb.archive import NotAnArchive, scan
from backups.engines.mongodb.bson_walker import parse_document
from backups.engines.mongodb.engine import MongoDBEngine
from backups.engines.mongodb.settings import config_text, human_error, settings_for, yaml_quoted
from backups.models import BackupStatus, Storage, Target
from restores.models import RestoreStatus
from restores.services import restore_backup
from tests.conftest import server_target, unique_name
from tests.engine_checks import ProcessWatch, assert_missing_tools_fail, child_named
from tests.servers import free_port
from tests.servers.mongodb import MongoServer, missing_programs, skip_reason

MISSING = missing_programs()
SKIP_REASON = skip_reason(MISSING)
needs_mongodb = pytest.mark.skipif(bool(MISSING), reason=SKIP_REASON)
PASSWORD_ENV = "TEST_MONGODB_PASSWORD"
ENGINE = MongoDBEngine()


def connection(**fields: Any) -> Connection:
    values: dict[str, Any] = {"host": "db.example.org", "database": "shop", **fields}
    return Connection(name="t", engine="mongodb", **values)


# -- archives built from the documented format ---------------------------------------------------

TERMINATOR = b"\xff\xff\xff\xff"
MAGIC = bytes.fromhex("6de29981")
RICH_DOCUMENT: dict[str, Any] = {
    "_id": ObjectId("65f0c0ffee00000000000001"),
    "name": "kündin 🚀 \"q\" 'x' \\ ½",
    "nested": {"deeper": {"list": [1, "two", {"three": 3.0}, [None, True, False]]}},
    "when": datetime(2024, 2, 29, 23, 59, 59, 999000, tzinfo=UTC),
    "price": Decimal128("-1234567890.123456789"),
    "blob": Binary(bytes(range(256))),
    "key": Binary(uuid.UUID("12345678-1234-5678-1234-567812345678").bytes, 4),
    "big": Int64(2**62),
    "pattern": Regex("^ab.*c$", "imx"),
    "code": Code("function () { return x; }", {"x": 1}),
    "plain_code": Code("return 1"),
    "stamp": Timestamp(1_700_000_000, 7),
    "low": MinKey(),
    "high": MaxKey(),
}


def namespace_header(database: str, collection: str, *, eof: bool = False) -> bytes:
    # CRC: mongodump's CRC-64-ECMA of the namespace's documents in the EOF header; the reader
    # does not check it (mongorestore does), so 0 serves for format tests.
    return bson.encode({"db": database, "collection": collection, "EOF": eof, "CRC": Int64(0)})


def build_archive(
    segments: list[tuple[str, list[dict[str, Any]]]],
    *,
    database: str = "shop",
    declared: dict[str, str] | None = None,
    closed: list[str] | None = None,
) -> bytes:
    """An archive as mongodump writes it: magic number, header, one prelude entry per declared
    collection (name -> type), the terminator, then the segments in the given order (a name may
    come back, as with parallel collections), then an EOF block for each name in ``closed``."""
    names = list(dict.fromkeys(name for name, _ in segments))
    declared = declared if declared is not None else dict.fromkeys(names, "collection")
    closed = closed if closed is not None else list(declared)
    header = {
        "concurrent_collections": 4,
        "version": "0.1",
        "server_version": "7.0.12",
        "tool_version": "100.10.0",
    }
    parts = [MAGIC, bson.encode(header)]
    for name, kind in declared.items():
        metadata = json.dumps({"options": {}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]})
        parts.append(
            bson.encode({"db": database, "collection": name, "metadata": metadata, "size": 0, "type": kind})
        )
    parts.append(TERMINATOR)
    for name, documents in segments:
        parts += [namespace_header(database, name), *(bson.encode(d) for d in documents), TERMINATOR]
    for name in closed:
        parts += [namespace_header(database, name, eof=True), TERMINATOR]
    return b"".join(parts)


def varied_archive() -> bytes:
    people = [{**RICH_DOCUMENT, "_id": i} for i in range(3)]
    orders = [{"_id": i, "items": [{"sku": f"s{i}", "qty": i}]} for i in range(4)]
    return build_archive(
        [
            ("people", people[:2]),
            ("orders", orders),
            ("people", people[2:]),
            ("empty", []),
            ("big_orders", []),
        ],
        declared={
            "people": "collection",
            "orders": "collection",
            "empty": "collection",
            "big_orders": "view",
        },
    )


class Trickle(io.BytesIO):
    """A stream that hands out a few bytes at a time, splitting every item of the archive."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(7)


@pytest.mark.parametrize("check_documents", [True, False])
def test_it_follows_an_archive_built_from_the_documented_format(check_documents: bool) -> None:
    data = varied_archive()
    for stream in (io.BytesIO(data), Trickle(data)):
        scanner = scan(stream, check_documents=check_documents)
        assert {name: ns.documents for name, ns in scanner.namespaces.items()} == {
            "shop.people": 3,
            "shop.orders": 4,
            "shop.empty": 0,
            "shop.big_orders": 0,
        }
        assert (scanner.collections(), scanner.collections("view")) == (
            ["people", "orders", "empty"],
            ["big_orders"],
        )
        assert scanner.databases == ["shop"]
    assert ENGINE.trial_restore(io.BytesIO(data), RestoreOptions()) == (
        "mongodump archive (mongodump 100.10.0, MongoDB 7.0.12): complete, 3 collection(s) and 1 view(s), "
        f"7 document(s), {len(data)} bytes"
    )


def test_it_counts_time_series_data_for_its_collection() -> None:
    """Servers before 8.3 keep a time series' data in system.buckets.NAME, and so does the archive."""
    data = build_archive(
        [("system.buckets.weather", [{"_id": 1, "meta": "x"}])],
        declared={"weather": "timeseries"},
        closed=["system.buckets.weather"],
    )
    scanner = scan(io.BytesIO(data), check_documents=True)
    assert scanner.namespaces["shop.weather"].documents == 1
    assert scanner.collections("timeseries") == ["weather"]


@pytest.mark.parametrize("check_documents", [True, False])
def test_it_refuses_every_cut_of_an_archive(check_documents: bool) -> None:
    data = build_archive([("a", [{"_id": 1, "x": "y" * 20}]), ("b", [{"_id": 2}])])
    for end in range(len(data)):
        with pytest.raises(EngineError):
            scan(io.BytesIO(data[:end]), check_documents=check_documents)
    assert scan(io.BytesIO(data), check_documents=check_documents).documents == 2


def _split_archive(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(magic + header, the prelude entries, what follows the prelude's terminator)."""
    header_size = int.from_bytes(data[4:8], "little")
    start = 4 + header_size
    end = data.index(TERMINATOR, start)
    while (end - start) and not _ends_documents(data[start:end]):
        end = data.index(TERMINATOR, end + 1)
    return data[:start], data[start:end], data[end + len(TERMINATOR) :]


def _ends_documents(chunk: bytes) -> bool:
    position = 0
    while position < len(chunk):
        size = int.from_bytes(chunk[position : position + 4], "little")
        if size < 5:
            return False
        position += size
    return position == len(chunk)


def _replace(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1
    return data.replace(old, new)


def test_it_names_what_is_wrong_with_a_damaged_archive() -> None:
    good = build_archive([("a", [{"_id": 1, "x": "text"}])])
    document = bson.encode({"_id": 1, "x": "text"})
    eof_block = namespace_header("shop", "a", eof=True) + TERMINATOR
    cases = [
        (b"\x00" + good[1:], "does not start with the archive magic number"),
        (good[: -len(eof_block)], "mongodump never finished shop.a"),
        (_replace(good, document, document[:-1] + b"\x01"), "does not end with a NUL byte"),
        (
            _replace(good, document, (2**30).to_bytes(4, "little") + document[4:]),
            "is neither a document length",
        ),
        (good + namespace_header("shop", "a") + document + TERMINATOR, "data for shop.a after its end"),
        (good + namespace_header("shop", "zzz") + TERMINATOR, "which the prelude does not declare"),
        (good + TERMINATOR, "a terminator where a namespace header belongs"),
        (good + document + TERMINATOR, "a namespace header lacks its db, collection or EOF field"),
        (
            good + namespace_header("shop", "a")[:9],
            "the archive is truncated: it ends inside a namespace header",
        ),
    ]
    for data, message in cases:
        for stream in (io.BytesIO(data), Trickle(data)):  # whole, and split across reads
            with pytest.raises(EngineError, match=message):
                scan(stream, check_documents=False)
    with pytest.raises(NotAnArchive):
        scan(io.BytesIO(b""), check_documents=False)


def test_it_walks_each_document_only_in_a_trial_restore() -> None:
    document = bson.encode({"_id": 1, "x": "text"})
    broken = document.replace(b"\x02x\x00", b"\x42x\x00")  # a type byte that BSON does not have
    data = _replace(build_archive([("a", [{"_id": 1, "x": "text"}])]), document, broken)
    assert scan(io.BytesIO(data), check_documents=False).documents == 1  # the framing is fine
    with pytest.raises(EngineError, match="unknown BSON type 0x42"):
        ENGINE.trial_restore(io.BytesIO(data), RestoreOptions())


def test_it_reads_every_type_pymongo_writes_with_the_bson_walker() -> None:
    fields = parse_document(bson.encode(RICH_DOCUMENT))
    assert list(fields) == list(RICH_DOCUMENT)
    assert (fields["name"], fields["big"], fields["code"]) == (RICH_DOCUMENT["name"], 2**62, None)
    encoded = bson.encode(RICH_DOCUMENT)
    for end in range(len(encoded)):
        with pytest.raises(ValueError):
            parse_document(encoded[:end])


@pytest.mark.parametrize("garbage", [b"", b"\x00\x17not a dump of any kind\xff" * 2000, b"PGDMP\x01\x0e"])
def test_it_never_takes_garbage_for_a_good_archive(garbage: bytes, tmp_path: Path) -> None:
    with pytest.raises(EngineError):
        ENGINE.trial_restore(io.BytesIO(garbage), RestoreOptions(scratch_dir=tmp_path))
    with pytest.raises(NotAnArchive):
        # Refused before mongorestore runs: the host does not even exist.
        ENGINE.restore(
            connection(host="no-such-host.invalid"), io.BytesIO(garbage), RestoreOptions(scratch_dir=tmp_path)
        )
    assert list(tmp_path.glob("mongodb-*")) == []


def test_it_refuses_to_restore_an_archive_of_several_databases(tmp_path: Path) -> None:
    one = build_archive([("bar", [{"_id": 1}])], database="test")
    other = build_archive([("system.version", [{"_id": "x"}])], database="admin")
    # Both databases' prelude entries, then both segments: what mongodump writes for a whole server.
    magic_and_header, one_prelude, one_rest = _split_archive(one)
    _, other_prelude, other_rest = _split_archive(other)
    data = magic_and_header + one_prelude + other_prelude + TERMINATOR + one_rest + other_rest
    with pytest.raises(
        NotAnArchive, match="holds 2 databases \\('test', 'admin'\\); a target restores exactly one"
    ):
        ENGINE.restore(
            connection(host="no-such-host.invalid"), io.BytesIO(data), RestoreOptions(scratch_dir=tmp_path)
        )


# -- the --config file, argv, settings ------------------------------------------------------------


def test_it_puts_the_password_only_in_the_private_config_file(tmp_path: Path) -> None:
    secret = "s3cret pw ü #:'\"\\"
    target = connection(user="backup er", password=secret, include_tables=("orders",))
    settings = settings_for(target)
    with ENGINE.config_file(tmp_path, settings, for_dump=True) as config:
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
        written = yaml.safe_load(config.read_text())
        argv = ENGINE.dump_argv(config, settings, target)
        restore_argv = ENGINE.restore_argv(config, settings, "shop")
    assert written["password"] == secret
    assert set(written) == {"uri", "password"}
    assert secret not in written["uri"] and "s3cret" not in written["uri"]
    assert argv == ["mongodump", f"--config={config}", "--archive", "--db=shop", "--collection=orders"]
    assert restore_argv == [
        "mongorestore",
        f"--config={config}",
        "--archive",
        "--stopOnError",
        "--nsInclude=shop.*",
        "--drop",
    ]
    assert not any(secret in arg or "s3cret" in arg for arg in argv + restore_argv)
    assert list(tmp_path.iterdir()) == []  # the file and its directory are gone
    with pytest.raises(RuntimeError), ENGINE.config_file(tmp_path, settings, for_dump=False):
        raise RuntimeError("the tool failed")
    assert list(tmp_path.iterdir()) == []  # whatever happens


def test_it_carries_everything_but_secrets_in_the_uri() -> None:
    options = {
        "auth_database": "users",
        "tls_ca_file": "/etc/ssl/my ca.pem",
        "tls_certificate_key_file": "/etc/ssl/client.pem",
        "tls_certificate_key_file_password": "key-secret",
        "read_preference": "secondaryPreferred",
        "connect_timeout": 4,
    }
    settings = settings_for(connection(host="::1", port=27018, user="ü@x", password="pw", options=options))
    uri = urlsplit(settings.uri(for_dump=True))
    assert (uri.scheme, unquote(uri.username or ""), uri.password, uri.hostname, uri.port) == (
        "mongodb",
        "ü@x",
        None,
        "::1",
        27018,
    )
    assert parse_qs(uri.query) == {
        "connectTimeoutMS": ["4000"],
        "serverSelectionTimeoutMS": ["4000"],
        "authSource": ["users"],
        "tls": ["true"],
        "tlsCAFile": ["/etc/ssl/my ca.pem"],
        "tlsCertificateKeyFile": ["/etc/ssl/client.pem"],
        "readPreference": ["secondaryPreferred"],
    }
    assert "readPreference" not in settings.uri(for_dump=False)  # restores write to the primary
    assert yaml.safe_load(config_text(settings, for_dump=True))["sslPEMKeyPassword"] == "key-secret"
    anonymous = settings_for(connection())
    assert (
        anonymous.uri(for_dump=True)
        == "mongodb://db.example.org:27017/?connectTimeoutMS=10000&serverSelectionTimeoutMS=10000"
    )
    assert yaml.safe_load(config_text(anonymous, for_dump=True)) == {"uri": anonymous.uri(for_dump=True)}


def test_it_renames_the_archive_database_on_restore_and_may_keep_collections(tmp_path: Path) -> None:
    settings = settings_for(connection(database="restored*", options={"drop": False}))
    assert ENGINE.restore_argv(tmp_path / "c.yaml", settings, "sh*op") == [
        "mongorestore",
        f"--config={tmp_path / 'c.yaml'}",
        "--archive",
        "--stopOnError",
        "--nsInclude=sh\\*op.*",
        "--nsFrom=sh\\*op.*",
        "--nsTo=restored\\*.*",
    ]


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "end\\",
        " spaces around ",
        "#hash: colon, [list] {map} & *alias !tag %",
        "new\nline\r\ttab",
        "'\"",
        "\\n is not a newline",
        "ünï 🚀 \u2028 \u0085 \ufeff \x7f \x01",
        "yes",
        "0123",
        "",
    ],
)
def test_it_quotes_yaml_so_that_it_survives_a_yaml_parser(value: str) -> None:
    """PyYAML, a YAML 1.1 parser like the tools' Go yaml.v2, reads every value back unchanged."""
    assert yaml.safe_load(f"password: {yaml_quoted(value)}\n") == {"password": value}


def test_it_names_a_missing_tls_file_before_any_tool_runs(tmp_path: Path) -> None:
    settings = settings_for(connection(options={"tls_ca_file": str(tmp_path / "nope.pem")}))
    with (
        pytest.raises(EngineError, match=r"tls_ca_file .*nope\.pem does not exist"),
        ENGINE.config_file(tmp_path, settings, for_dump=True),
    ):
        pass


# -- the tools' errors in human words --------------------------------------------------------------

# Error lines in the formats mongo-tools and its Go driver write (db.go, auth.go, topology/errors.go).
AUTH_FAILED = (
    "2026-01-02T03:04:05.678+0000\tFailed: can't create session: failed to connect to "
    "mongodb://backupsite@127.0.0.1:27017/?authSource=admin&connectTimeoutMS=10000: connection() error "
    "occurred during connection handshake: auth error: sasl conversation error: unable to authenticate "
    'using mechanism "SCRAM-SHA-256": (AuthenticationFailed) Authentication failed.'
)
REFUSED = (
    "2026-01-02T03:04:05.678+0000\terror connecting to host: failed to connect to "
    "mongodb://127.0.0.1:1/?connectTimeoutMS=2000&serverSelectionTimeoutMS=2000: server selection error: "
    "server selection timeout, current topology: { Type: Single, Servers: [{ Addr: 127.0.0.1:1, Type: "
    "Unknown, Last error: dial tcp 127.0.0.1:1: connect: connection refused }, ] }"
)
DUPLICATE = (
    "2026-01-02T03:04:05.678+0000\tFailed: shop.customers: error restoring from archive on stdin: "
    "(DuplicateKey) E11000 duplicate key error collection: shop.customers index: _id_ dup key: { _id: 1 }"
)


def test_it_reads_the_tools_errors_as_human_messages() -> None:
    settings = settings_for(
        connection(host="127.0.0.1", user="backupsite", password="pw", options={"connect_timeout": 2})
    )
    assert human_error(AUTH_FAILED, settings) == (
        "authentication failed for user backupsite on 127.0.0.1:27017 (check the password and auth_database, now admin)"
    )
    down = settings_for(connection(host="127.0.0.1", port=1, options={"connect_timeout": 2}))
    refused = human_error(REFUSED, down)
    assert refused.startswith(
        "cannot reach the server at 127.0.0.1:1 within 2 s: server selection error: server selection timeout"
    )
    assert refused.endswith("dial tcp 127.0.0.1:1: connect: connection refused }, ] }")
    assert "mongodb://" not in refused
    assert human_error(DUPLICATE, settings) == DUPLICATE.split("Failed: ")[1]
    leaky = settings_for(connection(user="u", password="hunter2-secret"))
    assert "hunter2-secret" not in human_error("Failed: bad password hunter2-secret", leaky)


def test_it_checks_mongorestores_own_tally() -> None:
    tally = "2026-01-02T03:04:05.678+0000\t{} document(s) restored successfully. {} document(s) failed to restore."
    assert MongoDBEngine._tally([tally.format(7, 0)], 7) == 7
    with pytest.raises(EngineError, match="restored 6 and failed 1 of the archive's 7 document"):
        MongoDBEngine._tally([tally.format(6, 1)], 7)
    with pytest.raises(EngineError, match="restored 5 and failed 0"):
        MongoDBEngine._tally([tally.format(5, 0)], 7)
    with pytest.raises(EngineError, match="did not report"):
        MongoDBEngine._tally(["done"], 7)


# -- missing tools ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_reports_missing_tools_as_a_system_check_error_and_a_failed_run(
    local_storage: Storage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = Target.objects.create(name="mongo-app", engine="mongodb", host="127.0.0.1", database="app")
    target.storages.add(local_storage)
    tools = ["mongodump", "mongorestore"]
    failure = "required program(s) not installed: mongodump, mongorestore"
    assert_missing_tools_fail(target, tools, failure, monkeypatch, tmp_path)
    assert get_engine("mongodb").missing_binaries() == tools
    dump = ENGINE.dump(connection(host="127.0.0.1"), DumpOptions(scratch_dir=tmp_path / "scratch"))
    with pytest.raises(EngineError, match="mongodump is not installed"), dump:
        pass
    assert list((tmp_path / "scratch").iterdir()) == []


# -- against a real server ------------------------------------------------------------------------


@pytest.fixture
def mongo(mongodb_server: MongoServer, monkeypatch: pytest.MonkeyPatch) -> MongoServer:
    """The session's server, with targets' password reference ${TEST_MONGODB_PASSWORD} set."""
    monkeypatch.setenv(PASSWORD_ENV, mongodb_server.password)
    return mongodb_server


def make_target(server: MongoServer, database: str, storage: Storage | None = None, **fields: Any) -> Target:
    return server_target(
        "mongodb", server, PASSWORD_ENV, storage, prefix="mongo", database=database, **fields
    )


def fill_sample(server: MongoServer, database: str, customers: int = 300) -> str:
    """Collections with nested documents, arrays, binary, dates, decimals and 64-bit integers;
    unique, compound, geo, text and TTL indexes; a validator, a capped collection, a view and
    an empty collection."""
    rng = random.Random(11)
    start = datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)
    with server.client() as client:
        db = client[database]
        db.create_collection(
            "orders", validator={"$jsonSchema": {"bsonType": "object", "required": ["customer", "amount"]}}
        )
        db.create_collection("events", capped=True, size=1 << 20)
        db.create_collection("empty")
        db.customers.insert_many(
            [
                {
                    "_id": i,
                    "name": f"kündin {i} 🚀 \"q\" 'x' \\ ½",
                    "email": f"user{i}@example.org",
                    "address": {
                        "city": "Zürich",
                        "geo": {"type": "Point", "coordinates": [8.5 + i / 1000, 47.3]},
                    },
                    "tags": ["a", i, None, True, 1.5, {"deep": [[i]]}],
                    "since": start - timedelta(days=i, milliseconds=i),
                    "balance": Decimal128(f"{rng.uniform(-1e9, 1e9):.6f}"),
                    "avatar": Binary(rng.randbytes(200)),
                    "key": Binary(uuid.UUID(int=rng.getrandbits(128)).bytes, 4),
                    "visits": Int64(i * 10**12),
                }
                for i in range(customers)
            ]
        )
        db.customers.create_index("email", unique=True)
        db.customers.create_index([("address.geo", "2dsphere")])
        db.orders.insert_many(
            [
                {
                    "_id": ObjectId(),
                    "customer": i % customers,
                    "amount": Decimal128(f"{rng.uniform(0, 1000):.2f}"),
                    "items": [{"sku": f"sku-{j}", "qty": j} for j in range(i % 5)],
                    "note": f"order {i} für ünïcode",
                    "created": start + timedelta(minutes=i),
                }
                for i in range(1000)
            ]
        )
        db.orders.create_index([("customer", 1), ("created", -1)], name="by_customer")
        db.orders.create_index([("note", "text")])
        db.events.insert_many([{"at": start + timedelta(seconds=i), "n": i} for i in range(200)])
        db.sessions.insert_many([{"_id": f"s{i}", "seen": start} for i in range(50)])
        db.sessions.create_index("seen", expireAfterSeconds=10**9)
        db.create_collection(
            "big_orders", viewOn="orders", pipeline=[{"$match": {"amount": {"$gt": Decimal128("500")}}}]
        )
    return database


def snapshot(server: MongoServer, database: str) -> dict[str, Any]:
    """Every collection's options, indexes and documents (raw BSON bytes, by _id) and every view."""
    raw: CodecOptions[RawBSONDocument] = CodecOptions(document_class=RawBSONDocument)
    with server.client() as client:
        db = client[database]
        result: dict[str, Any] = {}
        for info in sorted(db.list_collections(), key=lambda info: info["name"]):
            name = info["name"]
            if name.startswith("system."):
                continue
            entry: dict[str, Any] = {"type": info["type"], "options": info.get("options", {})}
            if info["type"] == "collection":
                collection = db.get_collection(name, codec_options=raw)
                # The codec hands out RawBSONDocument: compare the stored bytes, not a decoding.
                found = collection.find(sort=[("_id", 1)])
                entry["documents"] = [cast(RawBSONDocument, document).raw for document in found]
                entry["indexes"] = {
                    index: {key: value for key, value in spec.items() if key != "ns"}
                    for index, spec in db[name].index_information().items()
                }
            result[name] = entry
        return result


def mongodb_contract_case(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[Target, Target, Callable[[], None]]:
    """The entry for ``CASES`` in tests/test_engine_contract.py: a varied source database and a
    destination database of another name that the restore creates. Skips, saying why, when
    MongoDB's programs are not on PATH."""
    if MISSING:
        pytest.skip(SKIP_REASON)
    server: MongoServer = request.getfixturevalue("mongodb_server")
    storage: Storage = request.getfixturevalue("local_storage")
    request.getfixturevalue("monkeypatch").setenv(PASSWORD_ENV, server.password)
    source_db = fill_sample(server, unique_name("contract_src"), customers=100)
    destination_db = unique_name("contract_dst")

    def drop() -> None:
        server.drop_database(source_db)
        server.drop_database(destination_db)

    request.addfinalizer(drop)

    def compare() -> None:
        original = snapshot(server, source_db)
        assert original["customers"]["documents"] and original["big_orders"]["type"] == "view"
        assert snapshot(server, destination_db) == original

    return make_target(server, source_db, storage), make_target(server, destination_db, storage), compare


@needs_mongodb
@pytest.mark.django_db
def test_it_round_trips_a_varied_database_into_another_one(
    mongo: MongoServer, local_storage: Storage
) -> None:
    source_db = fill_sample(mongo, unique_name("rich"))
    destination_db = unique_name("rich_restored")
    try:
        backup = services.run_backup(make_target(mongo, source_db, local_storage))
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        assert backup.file_path.endswith(".archive.gz")
        info = backup.engine_info
        assert set(info["tables"]) == {"customers", "orders", "events", "sessions", "empty"}
        assert info["views"] == ["big_orders"]
        assert info["row_counts"] == {
            "customers": 300,
            "orders": 1000,
            "events": 200,
            "sessions": 50,
            "empty": 0,
        }
        assert info["documents"] == 1550 and info["tool_version"] and info["server_version"]
        outcome = services.verify_backup(backup, deep=True)
        assert outcome.ok, outcome.messages
        assert "complete, 5 collection(s) and 1 view(s), 1550 document(s)" in outcome.messages[-1]
        log = restore_backup(backup, make_target(mongo, destination_db), initiated_by="test")
        assert log.status == RestoreStatus.SUCCESS, log.error_message
        assert snapshot(mongo, destination_db) == snapshot(mongo, source_db)
    finally:
        mongo.drop_database(source_db)
        mongo.drop_database(destination_db)


@needs_mongodb
@pytest.mark.django_db
def test_it_restores_over_its_own_source(mongo: MongoServer, local_storage: Storage) -> None:
    database = fill_sample(mongo, unique_name("again"), customers=50)
    target = make_target(mongo, database, local_storage)
    try:
        original = snapshot(mongo, database)
        backup = services.run_backup(target)
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        with mongo.client() as client:
            client[database].orders.delete_many({})
            client[database].customers.update_many({}, {"$set": {"name": "changed"}})
        log = restore_backup(backup, target, confirmed_by="test")
        assert log.status == RestoreStatus.SUCCESS, log.error_message
        assert snapshot(mongo, database) == original
    finally:
        mongo.drop_database(database)


@needs_mongodb
@pytest.mark.django_db
def test_it_stops_the_restore_at_a_restore_error_with_the_tools_message(
    mongo: MongoServer, local_storage: Storage
) -> None:
    source_db = fill_sample(mongo, unique_name("conflict"), customers=50)
    destination_db = unique_name("conflict_dst")
    with mongo.client() as client:
        client[destination_db].customers.insert_one({"_id": 7, "name": "already here"})
    try:
        backup = services.run_backup(make_target(mongo, source_db, local_storage))
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        keep = make_target(mongo, destination_db, options={"drop": False})
        log = restore_backup(backup, keep)
        assert log.status == RestoreStatus.FAILED
        assert "duplicate key" in log.error_message
        assert "may be partially restored" in log.error_message
        # With drop (the default) the same restore replaces the collection.
        log = restore_backup(backup, make_target(mongo, destination_db))
        assert log.status == RestoreStatus.SUCCESS, log.error_message
        assert snapshot(mongo, destination_db) == snapshot(mongo, source_db)
    finally:
        mongo.drop_database(source_db)
        mongo.drop_database(destination_db)


@needs_mongodb
@pytest.mark.django_db
def test_it_fails_a_wrong_password_with_authentication_failed_and_no_secret(
    mongo: MongoServer, local_storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRONG_MONGODB_PASSWORD", "not-the-Right-one-42")
    target = make_target(mongo, "admin", local_storage, password="${WRONG_MONGODB_PASSWORD}")
    backup = services.run_backup(target)
    assert backup.status == BackupStatus.FAILED
    assert backup.error_message.startswith(
        f"authentication failed for user backupsite on {mongo.host}:{mongo.port} (check the password"
    ), backup.error_message
    texts = [backup.error_message, *(step.message for step in backup.steps.all())]
    assert not any("not-the-Right-one-42" in text for text in texts)
    with pytest.raises(EngineError, match="authentication failed"):
        ENGINE.check_restore_destination(
            connection(host=mongo.host, port=mongo.port, user=mongo.user, password="not-the-Right-one-42")
        )


@needs_mongodb
@pytest.mark.django_db
def test_it_fails_within_the_connect_timeout_when_the_server_is_down(
    mongo: MongoServer, local_storage: Storage
) -> None:
    port = free_port()  # nothing listens there
    target = make_target(mongo, "app", local_storage, port=port, options={"connect_timeout": 2})
    started = time.monotonic()
    backup = services.run_backup(target)
    assert time.monotonic() - started < 20
    assert backup.status == BackupStatus.FAILED
    assert backup.error_message.startswith(f"cannot reach the server at {mongo.host}:{port} within 2 s"), (
        backup.error_message
    )


@needs_mongodb
@pytest.mark.django_db
def test_it_backs_up_only_the_collections_asked_for(mongo: MongoServer, local_storage: Storage) -> None:
    database = fill_sample(mongo, unique_name("filters"), customers=20)
    try:
        only = services.run_backup(make_target(mongo, database, local_storage, include_tables=["customers"]))
        assert only.status == BackupStatus.SUCCESS, only.error_message
        assert (only.engine_info["tables"], only.engine_info["row_counts"]) == (
            ["customers"],
            {"customers": 20},
        )
        without = services.run_backup(
            make_target(mongo, database, local_storage, exclude_tables=["orders", "events"])
        )
        assert without.status == BackupStatus.SUCCESS, without.error_message
        assert set(without.engine_info["tables"]) == {"customers", "sessions", "empty"}
        missing = services.run_backup(make_target(mongo, database, local_storage, include_tables=["nope"]))
        assert missing.status == BackupStatus.FAILED
        assert (
            missing.error_message
            == f"collection nope does not exist in database {database} on {mongo.host}:{mongo.port}"
        )
        nothing = services.run_backup(make_target(mongo, unique_name("no_such_db"), local_storage))
        assert nothing.status == BackupStatus.FAILED
        assert "has no collections to back up" in nothing.error_message
    finally:
        mongo.drop_database(database)


@needs_mongodb
def test_it_reads_a_real_dump_in_a_trial_restore_and_refuses_a_cut_one(
    mongo: MongoServer, tmp_path: Path
) -> None:
    database = fill_sample(mongo, unique_name("trial"), customers=30)
    target = connection(
        host=mongo.host, port=mongo.port, user=mongo.user, password=mongo.password, database=database
    )
    try:
        with ENGINE.dump(target, DumpOptions(scratch_dir=tmp_path)) as dump:
            data = dump.stream.read()
    finally:
        mongo.drop_database(database)
    assert data.startswith(MAGIC) and dump.info["documents"] == 30 + 1000 + 200 + 50
    summary = ENGINE.trial_restore(Trickle(data), RestoreOptions(scratch_dir=tmp_path))
    assert "complete, 5 collection(s) and 1 view(s), 1280 document(s)" in summary
    for end in (0, 3, 100, len(data) // 2, len(data) - 5, len(data) - 1):
        with pytest.raises(EngineError):
            ENGINE.trial_restore(io.BytesIO(data[:end]), RestoreOptions(scratch_dir=tmp_path))


@needs_mongodb
# SCRAM-SHA-256 passwords go through SASLprep, which forbids control characters: none here.
@pytest.mark.parametrize("password", ["end\\", " spaces ", "#hash: x {y}", "'\"", "ünï %41@:/?&="])
def test_it_carries_any_password_in_the_config_file(
    mongo: MongoServer, password: str, tmp_path: Path
) -> None:
    user = unique_name("u")
    database = unique_name("quoting")
    mongo.create_user(user, password, ["backup"])
    with mongo.client() as client:
        client[database].things.insert_one({"_id": 1})
    try:
        target = connection(host=mongo.host, port=mongo.port, user=user, password=password, database=database)
        with ENGINE.dump(target, DumpOptions(scratch_dir=tmp_path)) as dump:
            dump.stream.read()
        assert dump.info["row_counts"] == {"things": 1}
        assert list(tmp_path.iterdir()) == []
    finally:
        mongo.drop_user(user)
        mongo.drop_database(database)


@pytest.fixture(scope="module")
def big_db(mongodb_server: MongoServer) -> Iterator[str]:
    """About 40 MB of documents: a dump that takes long enough to be watched."""
    name = unique_name("big")
    with mongodb_server.client() as client:
        payload = "x" * 700
        for batch in range(10):
            client[name].payload.insert_many([{"_id": batch * 5000 + i, "p": payload} for i in range(5000)])
    yield name
    mongodb_server.drop_database(name)


@needs_mongodb
@pytest.mark.django_db
def test_it_never_shows_the_password_in_argv_logs_or_messages(
    mongo: MongoServer, big_db: str, local_storage: Storage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    scratch = tmp_path / "scratch"
    caplog.set_level(logging.DEBUG)
    with ProcessWatch(
        [mongo.password],
        wanted=lambda line: line.startswith(b"mongodump\0") or b"/mongodump\0" in line,
        files=lambda: scratch.glob("mongodb-*/*.yaml"),
    ) as watch:
        backup = services.run_backup(make_target(mongo, big_db, local_storage))
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    dumps = [line.split(b"\0") for line in watch.seen if b"--archive" in line]
    assert dumps, "the sampler must have seen mongodump dumping"
    assert all(argv[1].startswith(b"--config=") for argv in dumps)
    assert watch.leaked == []
    assert watch.modes == {0o600}
    assert list(scratch.glob("mongodb-*")) == []
    texts = [caplog.text, backup.error_message, backup.notes, json.dumps(backup.engine_info)]
    texts += [step.message for step in backup.steps.all()]
    assert not any(mongo.password in text for text in texts)


@needs_mongodb
@pytest.mark.django_db
def test_it_fails_a_dump_killed_midway_and_stores_nothing(
    mongo: MongoServer, big_db: str, local_storage: Storage, storage_dir: Path, settings: Any, tmp_path: Path
) -> None:
    settings.BACKUPSITE_PROGRESS_INTERVAL = 0
    killed: list[int] = []

    def progress(raw: int, stored: int) -> None:
        if not killed and raw > 1024 * 1024 and (pid := child_named("mongodump")):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    backup = services.run_backup(make_target(mongo, big_db, local_storage), progress=progress)
    assert killed, "the test must have killed mongodump while it streamed"
    assert backup.status == BackupStatus.FAILED
    assert "mongodump was killed by SIGKILL" in backup.error_message
    assert [p for p in storage_dir.rglob("*") if p.is_file()] == []
    assert list((tmp_path / "scratch").glob("mongodb-*")) == []
    assert child_named("mongodump") is None
