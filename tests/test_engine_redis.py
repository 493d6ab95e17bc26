"""The Redis engine against real Redis 7 servers started by the suite: a password-protected
source holding every data type in four logical databases, and a destination that each test
empties first."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backups import services
from backups.engines import get_engine
from backups.engines.base import Connection, DumpOptions, EngineError, RestoreOptions
from backups.engines.redis.engine import RedisEngine, Settings, explain_cli
from backups.engines.redis.rdb import EOF_MARK_SIZE, GuardedSnapshot
from backups.models import BackupStatus, Storage, Target
from restores.models import RestoreStatus
from restores.services import restore_backup
from tests.conftest import server_target
from tests.engine_checks import ProcessWatch, assert_missing_tools_fail, child_named, command_lines
from tests.plugins.redis import FAST_SNAPSHOTS, redis_password
from tests.servers import free_port, silent_listener
from tests.servers.redis import (
    SAMPLE_DATABASES,
    RedisServer,
    assert_same_data,
    contents,
    functions,
    reset,
    running_redis,
)

pytestmark = pytest.mark.django_db

SOURCE_ENV = "TEST_REDIS_PASSWORD"
DESTINATION_ENV = "TEST_REDIS_DESTINATION_PASSWORD"
ENGINE = RedisEngine()


def make_target(
    server: RedisServer, password_env: str, storage: Storage | None = None, **fields: Any
) -> Target:
    """A redis Target on ``server`` whose password is the reference ``${password_env}``."""
    return server_target("redis", server, password_env, storage, **fields)


def connection(server: RedisServer, **fields: Any) -> Connection:
    values: dict[str, Any] = {"host": server.host, "port": server.port, "password": server.password, **fields}
    return Connection(name="t", engine="redis", **values)


def redis_contract_case(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[Target, Target, Callable[[], None]]:
    """The entry for ``CASES`` in tests/test_engine_contract.py: the sample source and an emptied
    destination server, compared key by key (types, values, TTLs, streams, functions)."""
    source_server: RedisServer = request.getfixturevalue("redis_source")
    destination_server: RedisServer = request.getfixturevalue("redis_destination")
    storage: Storage = request.getfixturevalue("local_storage")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv(SOURCE_ENV, source_server.password)
    monkeypatch.setenv(DESTINATION_ENV, destination_server.password)
    reset(destination_server)
    source = make_target(source_server, SOURCE_ENV, storage)
    destination = make_target(destination_server, DESTINATION_ENV, storage)

    def compare() -> None:
        assert set(contents(source_server)) == set(SAMPLE_DATABASES)  # so equality means something
        assert_same_data(source_server, destination_server)

    return source, destination, compare


@pytest.fixture(autouse=True)
def _passwords(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    for env, fixture in ((SOURCE_ENV, "redis_source"), (DESTINATION_ENV, "redis_destination")):
        if fixture in request.fixturenames:
            monkeypatch.setenv(env, request.getfixturevalue(fixture).password)


@pytest.fixture
def destination(redis_destination: RedisServer) -> RedisServer:
    reset(redis_destination)
    return redis_destination


@pytest.fixture(scope="module")
def sample_dump(
    redis_source: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[bytes, dict[str, Any]]:
    with ENGINE.dump(
        connection(redis_source), DumpOptions(scratch_dir=tmp_path_factory.mktemp("dump"))
    ) as dump:
        data = dump.stream.read()
    return data, dump.info


@contextlib.contextmanager
def big_server(megabytes: int = 40) -> Iterator[RedisServer]:
    """A server of its own (tests kill it) with incompressible data, so a dump lasts a moment."""
    with running_redis(redis_password(), extra_args=FAST_SNAPSHOTS) as server:
        with contextlib.closing(server.client()) as client:
            pipe = client.pipeline(transaction=False)
            for i in range(megabytes * 16):
                pipe.set(f"blob:{i}", os.urandom(64 * 1024))
            pipe.execute()
        yield server


# -- round trips ------------------------------------------------------------------------------------


def test_it_backs_up_verifies_and_restores_through_the_services(
    redis_source: RedisServer, destination: RedisServer, local_storage: Storage
) -> None:
    source = make_target(redis_source, SOURCE_ENV, local_storage)
    backup = services.run_backup(source, compression="zstd")
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert backup.file_path.endswith(".rdb.zst")
    info = backup.engine_info
    assert info["server_version"].startswith("7.") and info["rdb_version"] == 10
    assert set(info["keyspace"]) == {f"db{n}" for n in SAMPLE_DATABASES}
    assert info["keyspace"]["db5"] == {"keys": 300, "expires": 0}
    assert "approximate" in info["keyspace_note"]

    outcome = services.verify_backup(backup, deep=True)
    assert outcome.ok, outcome.messages
    assert any("redis-check-rdb found it sound" in message for message in outcome.messages), outcome.messages

    log = restore_backup(backup, make_target(destination, DESTINATION_ENV), initiated_by="test")
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert log.tables_restored == [f"db{n}" for n in SAMPLE_DATABASES]
    assert "db5 300" in log.notes and "no existing key was touched" in log.notes
    assert_same_data(redis_source, destination)


def test_it_dumps_a_standard_rdb_that_redis_server_loads_by_hand(
    redis_source: RedisServer, sample_dump: tuple[bytes, dict[str, Any]], tmp_path: Path
) -> None:
    data, info = sample_dump
    assert data.startswith(b"REDIS0010") and data[-9] == 0xFF  # whole: EOF opcode + CRC64, no mark
    assert info["transfer"] == "diskless"
    (tmp_path / "by-hand").mkdir()
    (tmp_path / "by-hand" / "dump.rdb").write_bytes(data)
    checked = subprocess.run(
        ["redis-check-rdb", str(tmp_path / "by-hand" / "dump.rdb")], capture_output=True, text=True
    )
    assert checked.returncode == 0 and "RDB looks OK" in checked.stdout, checked.stdout
    # The README's restore by hand: put the file where a fresh redis-server loads it.
    by_hand = ("--dir", str(tmp_path / "by-hand"), "--dbfilename", "dump.rdb")
    with running_redis(extra_args=by_hand) as server:
        assert_same_data(redis_source, server)


def test_it_transfers_the_whole_snapshot_from_disk_too(redis_source: RedisServer, tmp_path: Path) -> None:
    with contextlib.closing(redis_source.client()) as client:
        client.config_set("repl-diskless-sync", "no")
        try:
            with ENGINE.dump(connection(redis_source), DumpOptions(scratch_dir=tmp_path)) as dump:
                data = dump.stream.read()
        finally:
            client.config_set("repl-diskless-sync", "yes")
    assert dump.info["transfer"] == "disk" and data[-9] == 0xFF
    summary = ENGINE.trial_restore(io.BytesIO(data), RestoreOptions(scratch_dir=tmp_path))
    assert "redis-check-rdb found it sound" in summary


def test_it_restores_only_the_databases_asked_for(
    redis_source: RedisServer,
    destination: RedisServer,
    sample_dump: tuple[bytes, dict[str, Any]],
    tmp_path: Path,
) -> None:
    target = connection(destination, options={"databases": [1, 7]})
    result = ENGINE.restore(target, io.BytesIO(sample_dump[0]), RestoreOptions(scratch_dir=tmp_path))
    assert result.tables == ["db1", "db7"] and result.row_counts == {"db1": 3, "db7": 0}
    assert contents(destination) == {1: contents(redis_source, [1])[1]}
    assert functions(destination) == []  # server-wide: restored only with every database


def test_it_counts_and_skips_keys_expired_since_the_backup(destination: RedisServer, tmp_path: Path) -> None:
    with contextlib.closing(destination.client(3)) as client:
        client.set("stays", "here")
        client.set("goes", "soon", px=300)
    with ENGINE.dump(connection(destination), DumpOptions(scratch_dir=tmp_path)) as dump:
        data = dump.stream.read()
    reset(destination)
    time.sleep(0.5)
    summary = ENGINE.trial_restore(io.BytesIO(data), RestoreOptions(scratch_dir=tmp_path))
    assert "(2 key(s), 1 with a TTL, 1 already expired)" in summary and "(db3 2)" in summary
    result = ENGINE.restore(connection(destination), io.BytesIO(data), RestoreOptions(scratch_dir=tmp_path))
    assert result.row_counts == {"db3": 1}
    assert "1 key(s) had expired since the backup and were not restored" in result.message
    assert contents(destination) == {3: {b"stays": ("string", b"here", -1)}}


def test_it_speaks_tls(tmp_path_factory: pytest.TempPathFactory, destination: RedisServer) -> None:
    from tests.servers.mariadb import make_certificates

    certificates = make_certificates(tmp_path_factory.mktemp("redis-tls"))
    scratch = tmp_path_factory.mktemp("scratch")
    with running_redis(redis_password(), tls_dir=certificates, extra_args=FAST_SNAPSHOTS) as server:
        with contextlib.closing(server.client()) as client:
            client.set("over", "tls")
        options = {"tls": True, "tls_ca_file": str(certificates / "ca.pem")}
        ENGINE.probe(connection(server, options=options))
        with ENGINE.dump(connection(server, options=options), DumpOptions(scratch_dir=scratch)) as dump:
            data = dump.stream.read()
        ENGINE.restore(connection(destination), io.BytesIO(data), RestoreOptions(scratch_dir=scratch))
        assert contents(destination) == {0: {b"over": ("string", b"tls", -1)}}

        stranger = make_certificates(tmp_path_factory.mktemp("other-ca"), "someone-else")
        wrong = {"tls": True, "tls_ca_file": str(stranger / "ca.pem")}
        with pytest.raises(
            EngineError,
            match=rf"TLS with the server at 127\.0\.0\.1:{server.port} failed: .*certificate verify failed",
        ):
            ENGINE.probe(connection(server, options=wrong))
        with pytest.raises(EngineError, match="cannot connect to the server"):
            ENGINE.probe(connection(server))  # plain text to a TLS port
        ENGINE.probe(connection(server, options={"tls": True, "tls_insecure": True}))


# -- secrets ----------------------------------------------------------------------------------------


def test_it_never_shows_the_passwords_in_argv_logs_or_messages(
    destination: RedisServer,
    local_storage: Storage,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    with big_server() as server:
        monkeypatch.setenv("BIG_REDIS_PASSWORD", server.password)
        secrets = [server.password, destination.password]
        caplog.set_level(logging.DEBUG)
        with ProcessWatch(
            secrets,
            wanted=lambda line: line.startswith((b"redis-cli\0", b"redis-server\0", b"redis-check-rdb\0")),
        ) as watch:
            backup = services.run_backup(make_target(server, "BIG_REDIS_PASSWORD", local_storage))
            outcome = services.verify_backup(backup, deep=True)
            log = restore_backup(backup, make_target(destination, DESTINATION_ENV))
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    assert outcome.ok, outcome.messages
    assert log.status == RestoreStatus.SUCCESS, log.error_message
    assert log.notes.startswith("restored 640 key(s)")  # 64 KiB values: batches shrink to ~16 MiB
    seen = watch.seen
    assert any(b"--rdb" in line for line in seen), "the sampler must have seen redis-cli running"
    scratch = str(tmp_path / "scratch").encode()
    assert any(line.startswith(b"redis-server") and scratch in line for line in seen), (
        "... and a scratch server"
    )
    assert watch.leaked == []
    texts = [caplog.text, backup.error_message, backup.notes, json.dumps(backup.engine_info), log.notes]
    texts += [*outcome.messages, *(step.message for step in backup.steps.all())]
    assert not any(secret in text for text in texts for secret in secrets)
    assert list((tmp_path / "scratch").glob("redis-*")) == []


def test_it_fails_a_wrong_password_with_authentication_failed_and_no_secret(
    redis_source: RedisServer, local_storage: Storage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = "not-the-Right-one-42"
    monkeypatch.setenv("WRONG_REDIS_PASSWORD", wrong)
    backup = services.run_backup(make_target(redis_source, "WRONG_REDIS_PASSWORD", local_storage))
    assert backup.status == BackupStatus.FAILED
    where = f"{redis_source.host}:{redis_source.port}"
    assert backup.error_message == f"authentication failed for user default on {where} (check the password)"
    assert not any(wrong in step.message for step in backup.steps.all())
    with pytest.raises(EngineError, match="authentication failed for user default"):
        ENGINE.check_restore_destination(connection(redis_source, password=wrong))
    with pytest.raises(EngineError, match="requires a password and none is set"):
        ENGINE.probe(connection(redis_source, password=""))
    with (
        pytest.raises(EngineError, match="authentication failed for user nobody") as raised,
        ENGINE.dump(
            connection(redis_source, user="nobody", password=wrong), DumpOptions(scratch_dir=tmp_path)
        ),
    ):
        pass
    assert wrong not in str(raised.value)


def test_it_explains_redis_cli_messages_without_the_secret() -> None:
    settings = ENGINE.settings(connection(RedisServer(Path("/"), 6390, password="s3cret")))
    cases = {
        "AUTH failed: WRONGPASS invalid username-password pair or user is disabled.": "authentication failed for user default",
        "SYNC with master failed: -NOAUTH Authentication required.": "requires a password and none is set",
        "Could not connect to Redis at 127.0.0.1:6390: Connection refused": "cannot connect to the server at 127.0.0.1:6390: connection refused",
        "SYNC with master failed: -NOPERM this user has no permissions to run the 'sync' command": "+replconf +sync",
        "I/O Error reading RDB payload from socket": "broke during the transfer",
        "oops s3cret": "oops ***",
    }
    for line, expected in cases.items():
        lines = __import__("collections").deque(["sending REPLCONF capa eof", line])
        assert expected in explain_cli(settings, lines)("tail"), line


# -- failures ---------------------------------------------------------------------------------------


def test_it_fails_with_connection_refused_when_the_server_is_down(local_storage: Storage) -> None:
    port = free_port()  # nothing listens there
    target = Target.objects.create(name="redis-down", engine="redis", host="127.0.0.1", port=port)
    target.storages.add(local_storage)
    started = time.monotonic()
    backup = services.run_backup(target)
    assert time.monotonic() - started < 5
    assert backup.status == BackupStatus.FAILED
    assert backup.error_message == f"cannot connect to the server at 127.0.0.1:{port}: connection refused"


def test_it_fails_within_the_connect_timeout_when_the_server_never_answers(local_storage: Storage) -> None:
    with silent_listener() as port:
        target = Target.objects.create(
            name="redis-silent", engine="redis", host="127.0.0.1", port=port, options={"connect_timeout": 2}
        )
        target.storages.add(local_storage)
        started = time.monotonic()
        backup = services.run_backup(target)
        elapsed = time.monotonic() - started
    assert backup.status == BackupStatus.FAILED
    assert elapsed < 8
    assert backup.error_message == f"cannot connect to the server at 127.0.0.1:{port}: no answer within 2 s"


def test_it_reports_a_missing_tool_as_a_system_check_error_and_a_failed_run(
    redis_source: RedisServer, local_storage: Storage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = make_target(redis_source, SOURCE_ENV, local_storage)
    tools = ["redis-cli", "redis-server", "redis-check-rdb"]
    assert_missing_tools_fail(target, tools, "not installed: " + ", ".join(tools), monkeypatch, tmp_path)
    assert get_engine("redis").missing_binaries() == tools
    with (
        pytest.raises(EngineError, match="redis-cli is not installed"),
        ENGINE.dump(connection(redis_source), DumpOptions(scratch_dir=tmp_path)),
    ):
        pass
    with pytest.raises(EngineError, match="redis-server is not installed"):
        ENGINE.trial_restore(io.BytesIO(b"REDIS0010" + b"\0" * 100), RestoreOptions(scratch_dir=tmp_path))
    assert list(tmp_path.glob("redis-*")) == []


def test_it_fails_the_dump_when_the_server_is_killed_midway_and_stores_nothing(
    local_storage: Storage, storage_dir: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.BACKUPSITE_PROGRESS_INTERVAL = 0
    with big_server() as server:
        monkeypatch.setenv("BIG_REDIS_PASSWORD", server.password)
        killed: list[int] = []

        def progress(raw: int, stored: int) -> None:
            if not killed and raw > 1024 * 1024 and server.process is not None:
                os.kill(server.process.pid, signal.SIGKILL)
                killed.append(server.process.pid)

        backup = services.run_backup(
            make_target(server, "BIG_REDIS_PASSWORD", local_storage), progress=progress
        )
    assert killed, "the test must have killed the server while it streamed"
    assert backup.status == BackupStatus.FAILED
    assert "redis-cli failed with exit status 1: the connection to 127.0.0.1" in backup.error_message
    assert [p for p in storage_dir.rglob("*") if p.is_file()] == []
    assert child_named("redis-cli") is None


def read_in_small_pieces(stream: GuardedSnapshot) -> bytes:
    pieces = []
    while piece := stream.read(7):
        pieces.append(piece)
    return b"".join(pieces)


def test_it_never_takes_a_truncated_or_foreign_stream_for_a_dump() -> None:
    rdb = b"REDIS0010" + b"\xfa\x09redis-ver\x067.0.15" + b"\xff" + b"\x01" * 8
    mark = b"0123456789abcdef" * 2 + b"01234567"
    for data, problem in (
        (rdb, ""),
        (rdb + mark, ""),
        (rdb[:-3], "does not end with the RDB end marker"),
        ((rdb + mark)[:-1], "does not end with the RDB end marker"),
        (b"", "the server sent no data"),
    ):
        guarded = GuardedSnapshot(io.BytesIO(data))
        out = read_in_small_pieces(guarded)
        if problem:
            with pytest.raises(EngineError, match=problem):
                guarded.check(None)
        else:
            assert out == rdb and guarded.check(len(rdb)) == 10
            assert guarded.mark_dropped == (len(data) == len(rdb) + EOF_MARK_SIZE)
            with pytest.raises(EngineError, match="announced a snapshot of 5 bytes"):
                guarded.check(5)


def test_it_refuses_damaged_snapshots_in_a_trial_restore(
    sample_dump: tuple[bytes, dict[str, Any]], tmp_path: Path
) -> None:
    data = sample_dump[0]
    options = RestoreOptions(scratch_dir=tmp_path / "trial")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    for damaged, message in (
        (
            b"\x00\x17not a dump of any kind\xff" * 2000,
            "not a Redis RDB snapshot: it does not start with the REDIS",
        ),
        (b"", "not a Redis RDB snapshot: it is empty"),
        (data[: len(data) // 2], "redis-check-rdb found the snapshot damaged: .*Unexpected EOF"),
        (bytes(flipped), "redis-check-rdb found the snapshot damaged"),
        (data + b"trailing junk" * 10_000, "data after the RDB end marker"),
    ):
        with pytest.raises(EngineError, match=message):
            ENGINE.trial_restore(io.BytesIO(damaged), options)
    assert list((tmp_path / "trial").iterdir()) == []
    assert not [line for line in command_lines() if str(tmp_path).encode() in line]  # no scratch server left


def test_it_fails_the_restore_of_a_damaged_or_newer_snapshot_before_any_write(
    destination: RedisServer, sample_dump: tuple[bytes, dict[str, Any]], tmp_path: Path
) -> None:
    data = sample_dump[0]
    for damaged, message in (
        (
            data[: len(data) // 2],
            r"redis-server could not load the snapshot: .*Unexpected EOF reading RDB file",
        ),
        (
            b"REDIS0011" + data[9:],
            r"Can't handle RDB format version 11 .*install a redis-server at least as new",
        ),
        (data + b"junk" * 300_000, "data after the RDB end marker"),
        (b"PK\x03\x04 a zip file", "not a Redis RDB snapshot"),
    ):
        with pytest.raises(EngineError, match=message):
            ENGINE.restore(connection(destination), io.BytesIO(damaged), RestoreOptions(scratch_dir=tmp_path))
    assert contents(destination) == {} and functions(destination) == []
    assert list(tmp_path.iterdir()) == []


def test_it_refuses_to_restore_over_existing_keys_without_replace_and_changes_nothing(
    destination: RedisServer, sample_dump: tuple[bytes, dict[str, Any]], tmp_path: Path
) -> None:
    from tests.servers.redis import SAMPLE_LIBRARY

    with contextlib.closing(destination.client(5)) as client:
        client.set("k:7", "mine")
    with contextlib.closing(destination.client(0)) as client:
        client.set("greeting", "mine too")
        client.set("unrelated", "stays")
        client.function_load(SAMPLE_LIBRARY)
    before = contents(destination)
    with pytest.raises(EngineError) as raised:
        ENGINE.restore(
            connection(destination), io.BytesIO(sample_dump[0]), RestoreOptions(scratch_dir=tmp_path)
        )
    message = str(raised.value)
    assert "already holds 2 key(s) of the backup (db0: 'greeting'; db5: 'k:7')" in message
    assert "function library backupsite_sample" in message
    assert "nothing was written" in message and "replace = true" in message
    assert contents(destination) == before

    replacing = connection(destination, options={"replace": True})
    result = ENGINE.restore(replacing, io.BytesIO(sample_dump[0]), RestoreOptions(scratch_dir=tmp_path))
    assert "existing keys were replaced" in result.message
    with contextlib.closing(destination.client(0)) as client:
        assert client.get("greeting") == "héllo wörld 🚀".encode()
        assert client.get("unrelated") == b"stays"
    with contextlib.closing(destination.client(5)) as client:
        assert client.get("k:7") != b"mine"


def test_it_fails_a_restore_error_with_the_server_message(
    destination: RedisServer,
    redis_source: RedisServer,
    local_storage: Storage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with contextlib.closing(destination.client()) as client:
        client.acl_setuser(
            "norestore", enabled=True, passwords=["+limited-pw"], keys=["~*"], commands=["+@all", "-restore"]
        )
    try:
        monkeypatch.setenv("LIMITED_REDIS_PASSWORD", "limited-pw")
        backup = services.run_backup(make_target(redis_source, SOURCE_ENV, local_storage))
        assert backup.status == BackupStatus.SUCCESS, backup.error_message
        limited = make_target(destination, "LIMITED_REDIS_PASSWORD", user="norestore")
        log = restore_backup(backup, limited)
        assert log.status == RestoreStatus.FAILED
        assert "NOPERM" in log.error_message and "'restore' command" in log.error_message
        assert log.error_message.startswith("RESTORE of key ")
        assert "No key was restored, but the function libraries were (backupsite_sample)" in log.error_message
        assert contents(destination) == {}
    finally:
        with contextlib.closing(destination.client()) as client:
            client.acl_deluser("norestore")


def test_it_refuses_a_destination_with_too_few_databases_before_any_write(
    sample_dump: tuple[bytes, dict[str, Any]], tmp_path: Path
) -> None:
    with running_redis(redis_password(), extra_args=("--databases", "4")) as small:
        with pytest.raises(
            EngineError, match=r"cannot select db5 \(the restore writes there\): .*DB index is out of range"
        ):
            ENGINE.restore(
                connection(small), io.BytesIO(sample_dump[0]), RestoreOptions(scratch_dir=tmp_path)
            )
        assert contents(small, range(4)) == {}


def test_it_gives_a_user_who_may_not_sync_a_clear_message(destination: RedisServer, tmp_path: Path) -> None:
    with contextlib.closing(destination.client()) as client:
        client.acl_setuser(
            "nosync",
            enabled=True,
            passwords=["+nosync-pw"],
            keys=["~*"],
            commands=["+@all", "-sync", "-psync"],
        )
    try:
        target = connection(destination, user="nosync", password="nosync-pw")
        with (
            pytest.raises(
                EngineError, match=r"user nosync may not take a snapshot on .*\+replconf \+sync\): .*NOPERM"
            ),
            ENGINE.dump(target, DumpOptions(scratch_dir=tmp_path)),
        ):
            pass
    finally:
        with contextlib.closing(destination.client()) as client:
            client.acl_deluser("nosync")


def test_it_works_with_the_documented_minimal_acl_permissions(
    destination: RedisServer, tmp_path: Path
) -> None:
    from tests.servers.redis import SAMPLE_LIBRARY

    users = {
        "backup": ["-@all", "+ping", "+info", "+replconf", "+sync"],
        "restorer": [
            "-@all",
            "+ping",
            "+select",
            "+exists",
            "+restore",
            "+function|list",
            "+function|restore",
        ],
    }
    with contextlib.closing(destination.client()) as client:
        for user, commands in users.items():
            client.acl_setuser(user, enabled=True, passwords=[f"+{user}-pw"], keys=["~*"], commands=commands)
    with contextlib.closing(destination.client(2)) as client:
        client.set("in-db2", "x", ex=600)
        client.function_load(SAMPLE_LIBRARY)
    try:
        backup = connection(destination, user="backup", password="backup-pw")
        ENGINE.probe(backup)
        with ENGINE.dump(backup, DumpOptions(scratch_dir=tmp_path)) as dump:
            data = dump.stream.read()
        assert dump.info["keyspace"] == {"db2": {"keys": 1, "expires": 1}}
        reset(destination)
        restorer = connection(destination, user="restorer", password="restorer-pw")
        ENGINE.check_restore_destination(restorer)
        result = ENGINE.restore(restorer, io.BytesIO(data), RestoreOptions(scratch_dir=tmp_path))
        assert result.row_counts == {"db2": 1} and "function libraries: backupsite_sample" in result.message
    finally:
        with contextlib.closing(destination.client()) as client:
            client.acl_deluser(*users)


def test_it_explains_a_scratch_directory_too_deep_for_a_unix_socket(
    sample_dump: tuple[bytes, dict[str, Any]], tmp_path: Path
) -> None:
    deep = tmp_path / ("d" * 100)
    with pytest.raises(
        EngineError, match=r"too long for a Unix socket .* set BACKUPSITE_TMP to a shorter path"
    ):
        ENGINE.trial_restore(io.BytesIO(sample_dump[0]), RestoreOptions(scratch_dir=deep))
    assert list(deep.iterdir()) == []


# -- settings ---------------------------------------------------------------------------------------


def test_it_reads_tls_databases_and_replace_from_good_settings() -> None:
    """The validation table is tests/test_engine_validation.py; these settings are its redis case."""
    options = {
        "tls": True, "tls_ca_file": "/ca.pem", "tls_cert_file": "/c.pem", "tls_key_file": "/k.pem",
        "connect_timeout": 5, "replace": True, "databases": [0, 3],
    }  # fmt: skip
    good = Connection(
        name="t", engine="redis", host="10.0.0.5", port=6380, user="backup", password="x", options=options
    )
    settings = ENGINE.settings(good)
    assert isinstance(settings, Settings) and settings.databases == (0, 3) and settings.replace


def test_it_never_claims_to_know_that_nothing_changed(redis_source: RedisServer) -> None:
    assert ENGINE.fingerprint(connection(redis_source)) is None
