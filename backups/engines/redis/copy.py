"""Copying a loaded snapshot's keys into a live Redis with DUMP and RESTORE.

``DUMP`` serialises one key in Redis's own format (type, encoding, value, checksum) and
``RESTORE`` recreates it exactly, for every data type (streams with their consumer groups and
pending entries included), so nothing is re-encoded by hand and the destination keeps running.
Keys are read with one ``SCAN`` pass per logical database of the scratch server, ``PTTL`` and
``DUMP`` pipelined in batches, then ``RESTORE`` pipelined into the same database number of the
destination. A key's remaining time to live is taken from the scratch server's clock, which
applies the snapshot's absolute expiry times, and given to ``RESTORE`` as a relative TTL, so a
clock difference between this host and the destination does not shift it. Keys that expired
since the backup are not copied (a restore by hand with ``redis-server`` drops them too).

Memory: one batch of serialised values at a time: up to ``BATCH`` keys, fewer when values are
large, so that a batch holds about ``BATCH_BYTES`` (a single huge key is held whole, as Redis
itself holds it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from backups.engines.base import EngineError
from backups.engines.redis.scratch import LoadedSnapshot

BATCH = 1000
BATCH_BYTES = 16 * 1024 * 1024
SHOWN_CONFLICTS = 5

#: Opens a session on the destination, on one logical database.
Connect = Callable[[int], redis.Redis]


def show_key(key: bytes) -> str:
    text = key.decode("utf-8", "backslashreplace")
    return repr(text if len(text) <= 60 else text[:57] + "...")


def redis_message(exc: redis.RedisError) -> str:
    """Redis's own error text (redis-py strips the code, e.g. NOPERM, from the ones it maps)."""
    code = getattr(exc, "status_code", None)
    text = str(exc)
    return f"{code} {text}" if code and not text.startswith(code) else text


@dataclass
class Copied:
    keys: dict[int, int] = field(default_factory=dict)  # db -> keys restored
    expired: dict[int, int] = field(default_factory=dict)  # db -> keys that had expired
    libraries: list[str] = field(default_factory=list)


def scratch_error(exc: redis.RedisError) -> EngineError:
    """An error of the scratch server, which holds the backup: never blamed on the destination."""
    return EngineError(f"reading the backup from the scratch redis-server failed: {redis_message(exc)}")


def scan(client: redis.Redis) -> Iterator[list[bytes]]:
    """Every key of the scratch server's database ``client`` is on, once (see redis_scratch: the
    tables never shrink)."""
    cursor = 0
    while True:
        try:
            cursor, found = client.scan(cursor, count=BATCH)
        except redis.RedisError as exc:
            raise scratch_error(exc) from None
        keys = [key if isinstance(key, bytes) else key.encode() for key in found]
        for start in range(0, len(keys), BATCH):
            yield keys[start : start + BATCH]
        if cursor == 0:
            return


def libraries(client: redis.Redis) -> list[str]:
    """The names of the server's function libraries (Redis 7 functions live in the RDB too)."""
    names = []
    for entry in client.function_list():
        fields = entry if isinstance(entry, dict) else dict(zip(entry[::2], entry[1::2], strict=True))
        name = fields.get(b"library_name", fields.get("library_name", b""))
        names.append(name.decode() if isinstance(name, bytes) else str(name))
    return sorted(names)


class Copier:
    """Checks and copies one loaded snapshot into one destination; after a failure, undoes what
    it wrote when it can (:meth:`aftermath`)."""

    def __init__(self, snapshot: LoadedSnapshot, connect: Connect, *, replace: bool, where: str) -> None:
        self.snapshot = snapshot
        self._connect = connect
        self._sessions: dict[int, redis.Redis] = {}
        self.replace = replace
        self.where = where
        #: Keys written so far, by database. Without ``replace`` each was absent before (RESTORE
        #: without REPLACE refuses an existing key), so deleting them undoes the restore.
        self.written: dict[int, list[bytes]] = {}
        self.restored = 0
        self.libraries_added: list[str] = []

    def connect(self, db: int) -> redis.Redis:
        """A session on the destination's database ``db`` (one per database, kept until close)."""
        if db not in self._sessions:
            self._sessions[db] = self._connect(db)
        return self._sessions[db]

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()

    def preflight(self, databases: list[int], with_functions: bool) -> None:
        """Refuse before writing anything: a database number the destination lacks, and, without
        ``replace``, any key or function library of the backup that the destination already has."""
        conflicts: dict[int, list[bytes]] = {}
        total = 0
        for db in databases:
            try:
                destination = self.connect(db)  # SELECTs the database: fails if it does not exist
            except EngineError as exc:
                raise EngineError(
                    f"the destination cannot select db{db} (the restore writes there): {exc}; nothing was written"
                ) from None
            if self.replace:
                continue
            for keys in scan(self.snapshot.client(db)):
                pipe = destination.pipeline(transaction=False)
                for key in keys:
                    pipe.exists(key)
                found = [key for key, exists in zip(keys, pipe.execute(), strict=True) if exists]
                total += len(found)
                if found and sum(map(len, conflicts.values())) < SHOWN_CONFLICTS:
                    conflicts.setdefault(db, []).extend(found)
        clashing: list[str] = []
        wanted = libraries(self.snapshot.client()) if with_functions and not self.replace else []
        if wanted:  # only then: a restore user needs no FUNCTION rights for a backup without functions
            clashing = sorted(set(wanted) & set(libraries(self.connect(0))))
        if total or clashing:
            shown, parts = 0, []
            for db, keys in conflicts.items():
                names = [show_key(key) for key in keys[: SHOWN_CONFLICTS - shown]]
                shown += len(names)
                if names:
                    parts.append(f"db{db}: {', '.join(names)}")
            what = []
            if total:
                what.append(
                    f"{total} key(s) of the backup ({'; '.join(parts)}{', ...' if total > shown else ''})"
                )
            if clashing:
                what.append(f"function librar{'y' if len(clashing) == 1 else 'ies'} {', '.join(clashing)}")
            raise EngineError(
                f"the destination {self.where} already holds {' and '.join(what)}; nothing was written. "
                "Set the option replace = true on the destination target to overwrite them, or delete them first."
            )

    def copy(self, databases: list[int], with_functions: bool) -> Copied:
        """Copy the keys of ``databases`` (and the function libraries); raises :class:`EngineError`
        or the destination's :class:`redis.RedisError` at the first error, after which
        :meth:`aftermath` says (and where it can, undoes) what was written."""
        copied = Copied()
        if with_functions:
            try:
                copied.libraries = libraries(self.snapshot.client())
                # bytes, which redis-py sends as they are
                payload = self.snapshot.client().function_dump() if copied.libraries else b""
            except redis.RedisError as exc:
                raise scratch_error(exc) from None
            if copied.libraries:
                policy = "REPLACE" if self.replace else "APPEND"
                try:
                    self.connect(0).function_restore(payload, policy)  # type: ignore[arg-type]
                except redis.RedisError as exc:
                    raise EngineError(
                        f"FUNCTION RESTORE on {self.where} failed: {redis_message(exc)}"
                    ) from None
                self.libraries_added = copied.libraries
        try:
            sizes = self.snapshot.keyspace()
        except redis.RedisError as exc:
            raise scratch_error(exc) from None
        for db in databases:
            restored = self._copy_database(db, copied)
            copied.keys[db] = restored
            copied.expired[db] = sizes.get(db, 0) - restored
            if copied.expired[db] < 0:
                raise EngineError(
                    f"db{db}: {restored} keys restored but the backup holds only {sizes.get(db, 0)}"
                )
        return copied

    def _copy_database(self, db: int, copied: Copied) -> int:
        source, destination = self.snapshot.client(db), self.connect(db)
        restored, group = 0, BATCH
        for keys in scan(source):
            while keys:
                part, keys = keys[:group], keys[group:]
                size, written = self._copy_part(db, part, source, destination)
                restored += written
                # Next time read about BATCH_BYTES of serialised values (from the average so far).
                group = max(1, min(BATCH, BATCH_BYTES * len(part) // max(size, 1)))
        return restored

    def _copy_part(
        self, db: int, keys: list[bytes], source: redis.Redis, destination: redis.Redis
    ) -> tuple[int, int]:
        """PTTL+DUMP ``keys`` from the scratch server and RESTORE them, pipelined; return the bytes
        of serialised values read and the number of keys restored."""
        read = source.pipeline(transaction=False)
        for key in keys:
            read.pttl(key)
            read.dump(key)
        try:
            replies = read.execute()
        except redis.RedisError as exc:
            raise scratch_error(exc) from None
        write = destination.pipeline(transaction=False)
        batch: list[bytes] = []
        size = 0
        for index, key in enumerate(keys):
            ttl, payload = replies[2 * index], replies[2 * index + 1]
            if payload is None:
                continue  # expired since the backup (hidden by the scratch replica)
            write.restore(key, max(int(ttl), 0), payload, replace=self.replace)
            batch.append(key)
            size += len(payload)
        if not batch:
            return size, 0
        failure: tuple[bytes, redis.RedisError] | None = None
        written = self.written.setdefault(db, [])
        # The pipeline is not a transaction: every RESTORE in it ran, also those after a failed one.
        for key, result in zip(batch, write.execute(raise_on_error=False), strict=True):
            if isinstance(result, redis.RedisError):
                failure = failure or (key, result)
                continue
            self.restored += 1
            if not self.replace:
                written.append(key)
        if failure is not None:
            refused, error = failure
            raise EngineError(
                f"RESTORE of key {show_key(refused)} into db{db} on {self.where} failed: {redis_message(error)}"
            )
        return size, len(batch)

    def aftermath(self) -> str:
        """After a failed :meth:`copy`: what it had written and what became of it. Without
        ``replace`` the keys and function libraries it wrote are deleted again (each was absent
        before), so the destination is as it was, apart from what others wrote to those keys
        meanwhile; with ``replace`` the values it overwrote are gone, and it says so."""
        if not self.restored and not self.libraries_added:
            return "Nothing was written"
        named = ", ".join(self.libraries_added)
        if self.restored:
            what = f"{self.restored} key(s) had been restored" + (
                f", and the function libraries ({named})" if named else ""
            )
        else:
            what = f"No key was restored, but the function libraries were ({named})"
        if self.replace:
            return (
                f"{what}: the destination is partially restored (with replace = true, the keys it "
                "overwrote cannot get their old contents back)"
            )
        try:
            self._undo()
        except redis.RedisError as exc:
            return (
                f"{what}; deleting them again failed ({redis_message(exc)}): the destination is "
                "partially restored"
            )
        return f"{what}; they were deleted again, so the destination is as it was"

    def _undo(self) -> None:
        for db, keys in self.written.items():
            destination = self.connect(db)
            for start in range(0, len(keys), BATCH):
                pipe = destination.pipeline(transaction=False)
                for key in keys[start : start + BATCH]:
                    pipe.unlink(key)
                pipe.execute()
        for name in self.libraries_added:
            self.connect(0).function_delete(name)


def summary(copied: Copied, where: str, replace: bool) -> str:
    per_db = ", ".join(f"db{db} {count}" for db, count in copied.keys.items()) or "no keys in the backup"
    parts = [f"restored {sum(copied.keys.values())} key(s) into {where} ({per_db})"]
    if copied.libraries:
        parts.append(f"function libraries: {', '.join(copied.libraries)}")
    expired = sum(copied.expired.values())
    if expired:
        parts.append(f"{expired} key(s) had expired since the backup and were not restored")
    parts.append("existing keys were replaced" if replace else "no existing key was touched")
    return "; ".join(parts)


def restored_counts(copied: Copied) -> dict[str, Any]:
    return {f"db{db}": count for db, count in copied.keys.items()}
