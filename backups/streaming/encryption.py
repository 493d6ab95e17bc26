"""Streaming encryption in the age format (https://age-encryption.org/v1, X25519 recipients),
through pyrage, so that a stored file decrypts with the standard tool: ``age -d -i key.txt``.

pyrage encrypts and decrypts file-like objects (``encrypt_io``/``decrypt_io``) that it pulls
from. The backup pipeline pushes chunks through transforms instead, so :class:`AgeEncryptor`
runs ``encrypt_io`` in one thread fed by a small bounded queue: memory stays bounded by a few
chunks whatever the size of the backup. :func:`decrypted` is the restore side: ``decrypt_io``
in one thread writing into a pipe that the caller reads.

age authenticates its payload in 64 KiB chunks: a wrong identity is refused before any byte
comes out, a damaged or truncated file only at the chunk that is damaged (the bytes before it
have been read by then). Errors never contain an identity: pyrage's messages name none.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import queue
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import pyrage
from pyrage import x25519

AGE_EXTENSION = ".age"
_QUEUED_CHUNKS = 4  # chunks waiting for the encrypting thread; update() blocks beyond that
_READ_SIZE = 1 << 16  # age's payload chunk
_POLL_SECONDS = 0.5  # how often a waiting encrypting thread looks whether it was abandoned


class EncryptionError(Exception):
    """A recipient or identity is not valid, or a stream could not be encrypted or decrypted."""


class KeyMismatch(EncryptionError):
    """No identity given matches the stream's recipients: the key's fault, not the file's."""


def parse_recipient(text: str) -> x25519.Recipient:
    """An X25519 recipient (``age1...``); EncryptionError naming it when it is not one."""
    try:
        return x25519.Recipient.from_str(text.strip())
    except (pyrage.RecipientError, ValueError) as exc:
        if "SECRET-KEY" in text.upper():  # a private key pasted by mistake: never repeated
            raise EncryptionError(
                "this is an age identity (a private key), not a recipient: give its public key "
                "(age-keygen -y key.txt prints it) and keep the identity secret"
            ) from None
        raise EncryptionError(f"not an age X25519 recipient (age1...): {text.strip()[:80]!r}") from exc


def parse_identity(text: str) -> x25519.Identity:
    """An X25519 identity (``AGE-SECRET-KEY-1...``, the key file's line; comment lines are
    skipped). The error never repeats the text: it is a secret."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    try:
        if len(lines) != 1:
            raise ValueError("one identity line expected")
        return x25519.Identity.from_str(lines[0])
    except (pyrage.IdentityError, ValueError) as exc:
        raise EncryptionError(
            "not an age X25519 identity: expected one line AGE-SECRET-KEY-1... (age-keygen's key file)"
        ) from exc


def key_fingerprint(recipient: str) -> str:
    """The key id recorded on a backup: 16 hex digits of the recipient's SHA-256, the same in
    every catalog (a rebuilt catalog finds the key by it)."""
    return hashlib.sha256(recipient.strip().encode()).hexdigest()[:16]


def recipient_of(identity_text: str) -> str:
    """The recipient (age1...) of an identity key file's text."""
    return str(parse_identity(identity_text).to_public())


def identity_line(identity_text: str) -> str:
    """The AGE-SECRET-KEY-1... line of a key file's text (to redact it wherever it appears)."""
    return str(parse_identity(identity_text))


def generate_key_file(created: str) -> tuple[str, str]:
    """A new identity as age-keygen writes it (comment lines, then the key) and its recipient."""
    identity = x25519.Identity.generate()
    recipient = str(identity.to_public())
    return f"# created: {created}\n# public key: {recipient}\n{identity}\n", recipient


class _QueueReader(io.RawIOBase):
    """What the encrypting thread reads: chunks from a queue until None, or an error once the
    encryptor was abandoned (closed, or dropped by a pipeline that failed), so the thread ends."""

    def __init__(self, chunks: queue.Queue[bytes | None], abandoned: threading.Event) -> None:
        self._chunks, self._abandoned = chunks, abandoned
        self._pending, self._ended = b"", False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._ended:
            try:
                chunk = self._chunks.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if self._abandoned.is_set():
                    raise OSError("abandoned: the backup stopped before its end") from None
                continue
            if chunk is None:
                self._ended = True
            else:
                self._pending = chunk
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


class _Collector(io.RawIOBase):
    """Where the encrypting thread writes: ciphertext kept until the pipeline takes it."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        with self._lock:
            self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        with self._lock:
            taken, self._parts = b"".join(self._parts), []
        return taken


class AgeEncryptor:
    """A pipeline transform (``update``/``finish``) encrypting to ``recipients`` (age1...).
    ``update`` returns the ciphertext ready so far (often less than it was given, sometimes
    nothing); ``finish`` returns the rest, including the final authenticated chunk."""

    def __init__(self, recipients: Sequence[str]) -> None:
        if not recipients:
            raise EncryptionError("no recipient to encrypt to")
        parsed = [parse_recipient(text) for text in recipients]
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=_QUEUED_CHUNKS)
        self._out = _Collector()
        self._errors: list[BaseException] = []
        self._abandoned = threading.Event()
        reader = io.BufferedReader(_QueueReader(self._chunks, self._abandoned), _READ_SIZE)
        # The thread holds no reference to this object, so dropping it (a pipeline that failed
        # and never called finish) abandons the thread too.
        self._thread = threading.Thread(
            target=_encrypt, args=(reader, self._out, parsed, self._errors), name="age-encrypt", daemon=True
        )
        self._thread.start()
        weakref.finalize(self, self._abandoned.set)

    def close(self) -> None:
        """Give up: the thread ends within a second (a backup that stopped midway)."""
        self._abandoned.set()

    def _check(self) -> None:
        if self._errors:
            raise EncryptionError(f"age encryption failed: {self._errors[0]}") from self._errors[0]

    def update(self, data: bytes) -> bytes:
        self._check()
        if data:
            while True:  # a thread that died stops reading: never block on it for good
                try:
                    self._chunks.put(data, timeout=1)
                    break
                except queue.Full as full:
                    if not self._thread.is_alive():
                        self._check()
                        raise EncryptionError("age encryption stopped reading its input") from full
        return self._out.take()

    def finish(self) -> bytes:
        self._chunks.put(None)
        self._thread.join()
        self._check()
        return self._out.take()


def _encrypt(
    reader: io.BufferedReader,
    out: _Collector,
    recipients: list[x25519.Recipient],
    errors: list[BaseException],
) -> None:
    try:
        pyrage.encrypt_io(reader, out, recipients)
    except BaseException as exc:  # handed to the pipeline's thread by update() / finish()
        errors.append(exc)


@contextlib.contextmanager
def decrypted(source: BinaryIO, identities: Sequence[str]) -> Iterator[io.RawIOBase]:
    """The plaintext of the age stream ``source``, read through a pipe that a thread fills with
    ``decrypt_io``. The header and the first authenticated chunk are checked on entry, before
    the caller reads a byte: a wrong identity or a damaged start raises EncryptionError here.
    Reading to the end raises EncryptionError when a later chunk is damaged or the stream is
    truncated, and the source's own error (a storage that failed) unchanged; leaving the block
    early stops the thread."""
    parsed = [parse_identity(text) for text in identities]
    if not parsed:
        raise EncryptionError("no identity to decrypt with")
    read_end, write_end = os.pipe()
    errors: list[BaseException] = []
    watched = _SourceReader(source)

    def run() -> None:
        try:
            with open(write_end, "wb", closefd=True) as sink:
                pyrage.decrypt_io(watched, sink, parsed)
        except BaseException as exc:  # a reader that left early closes the pipe: BrokenPipeError
            errors.append(watched.error or exc)

    thread = threading.Thread(target=run, name="age-decrypt", daemon=True)
    thread.start()
    with _CheckedReader(open(read_end, "rb", closefd=True), thread, errors) as plain:
        try:
            plain.check_start()
            yield plain
        finally:
            plain.close()  # a thread still writing gets a broken pipe and ends
            thread.join()


class _SourceReader:
    """The ciphertext source as pyrage reads it, remembering the source's own failure so that a
    storage error is not reported as damage."""

    def __init__(self, source: BinaryIO) -> None:
        self._source = source
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        try:
            return self._source.read(size)
        except BaseException as exc:
            self.error = exc
            raise


class _CheckedReader(io.RawIOBase):
    """The pipe's read end; at its end, the decrypting thread's failure is raised."""

    def __init__(self, pipe: BinaryIO, thread: threading.Thread, errors: list[BaseException]) -> None:
        self._pipe, self._thread, self._errors = pipe, thread, errors
        self._first = b""

    def readable(self) -> bool:
        return True

    def check_start(self) -> None:
        """Wait for the first plaintext bytes: age writes none before the header matched an
        identity and the first chunk authenticated; raise the failure when it did not."""
        self._first = self._pipe.read1(_READ_SIZE)  # type: ignore[attr-defined]
        if not self._first:
            self._raise_failure()

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._first:
            count = min(len(buffer), len(self._first))
            buffer[:count] = self._first[:count]
            self._first = self._first[count:]
            return count
        count = self._pipe.readinto(buffer)  # type: ignore[attr-defined]
        if not count:
            self._raise_failure()
        return int(count or 0)

    def _raise_failure(self) -> None:
        self._thread.join()
        if self._errors:
            raise _describe(self._errors[0])

    def close(self) -> None:
        self._pipe.close()
        super().close()


def _describe(exc: BaseException) -> BaseException:
    """pyrage's failure as EncryptionError; the source's own failure unchanged."""
    if isinstance(exc, pyrage.DecryptError):
        if "no matching keys" in str(exc).lower():
            return KeyMismatch(
                "no identity here matches this backup's recipients: it was encrypted to another key"
            )
        return EncryptionError(f"not a readable age file: its header is damaged ({exc})")
    if type(exc) is OSError:  # pyrage's "decryption error": a chunk failed authentication
        return EncryptionError(f"the encrypted stream is damaged or truncated ({exc})")
    return exc
