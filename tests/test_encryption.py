"""Streaming age encryption (issue 19's first part: the format, not yet wired into runs): round
trips through the pipeline's transform, interop both ways with Debian's ``age`` tool, and the
refusals: a wrong identity before any byte comes out, a flipped byte, a truncated file, bad
recipients and identities named without repeating a secret."""

from __future__ import annotations

import gc
import hashlib
import io
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pyrage import x25519

from backups.streaming.encryption import (
    AgeEncryptor,
    EncryptionError,
    decrypted,
    parse_identity,
    parse_recipient,
)
from backups.streaming.pipeline import stream_backup
from tests.test_pipeline import BytesSink

MIB = 1024 * 1024
AGE = shutil.which("age")
needs_age = pytest.mark.skipif(AGE is None, reason="Debian's age is not installed (make test installs it)")


def key_pair() -> tuple[str, str]:
    identity = x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def encrypt(data: bytes, recipients: list[str], chunk: int = MIB) -> bytes:
    encryptor = AgeEncryptor(recipients)
    parts = [encryptor.update(data[at : at + chunk]) for at in range(0, len(data), chunk)]
    return b"".join([*parts, encryptor.finish()])


def decrypt(data: bytes, identities: list[str]) -> bytes:
    with decrypted(io.BytesIO(data), identities) as plain:
        return plain.read()


def test_it_round_trips_through_the_pipeline_and_hashes_the_stored_ciphertext(tmp_path):
    identity, recipient = key_pair()
    plain = os.urandom(9 * MIB + 12345)  # not a whole number of age's 64 KiB chunks
    stored = BytesSink()
    result = stream_backup(
        io.BytesIO(plain), [stored], "gzip", extra_transforms=[AgeEncryptor([recipient])], chunk_size=MIB
    )
    ciphertext = bytes(stored.data)
    assert ciphertext.startswith(b"age-encryption.org/v1\n")
    assert result.raw_size == len(plain) and result.size == len(ciphertext)
    assert result.sha256 == hashlib.sha256(ciphertext).hexdigest()  # verify needs no key
    import gzip

    assert gzip.decompress(decrypt(ciphertext, [identity])) == plain


def test_it_encrypts_to_every_recipient_so_an_escrow_key_alone_decrypts():
    (daily, daily_recipient), (escrow, escrow_recipient) = key_pair(), key_pair()
    ciphertext = encrypt(b"x" * (3 * MIB), [daily_recipient, escrow_recipient])
    assert decrypt(ciphertext, [escrow]) == b"x" * (3 * MIB)
    assert decrypt(ciphertext, [daily]) == b"x" * (3 * MIB)


def test_it_returns_ciphertext_as_it_goes_not_all_at_the_end():
    _, recipient = key_pair()
    encryptor = AgeEncryptor([recipient])
    sizes = [len(encryptor.update(os.urandom(MIB))) for _ in range(32)]
    tail = len(encryptor.finish())
    assert sum(sizes) > 24 * MIB and tail < 6 * MIB  # bounded by the queue, not the stream


@needs_age
def test_it_writes_files_debians_age_decrypts_and_reads_files_it_encrypts(tmp_path: Path):
    assert AGE is not None
    identity, recipient = key_pair()
    key = tmp_path / "key.txt"
    key.write_text(f"# created by the test\n# public key: {recipient}\n{identity}\n")
    key.chmod(0o600)
    plain = os.urandom(5 * MIB + 7)
    ours = tmp_path / "ours.age"
    ours.write_bytes(encrypt(plain, [recipient]))
    by_hand = subprocess.run([AGE, "-d", "-i", str(key), str(ours)], capture_output=True, check=True)
    assert by_hand.stdout == plain
    theirs = subprocess.run([AGE, "-r", recipient], input=plain, capture_output=True, check=True).stdout
    assert decrypt(theirs, [key.read_text()]) == plain  # the key file as written, comments and all


def test_it_refuses_a_wrong_identity_on_entry_before_the_caller_reads():
    _, recipient = key_pair()
    stranger, _ = key_pair()
    ciphertext = encrypt(os.urandom(2 * MIB), [recipient])
    with (
        pytest.raises(EncryptionError, match="no identity here matches") as refused,
        decrypted(io.BytesIO(ciphertext), [stranger]),
    ):
        pytest.fail("entered the block with the wrong identity")
    assert stranger not in str(refused.value)


def test_a_storage_failure_while_decrypting_stays_the_storage_error():
    identity, recipient = key_pair()
    ciphertext = encrypt(os.urandom(3 * MIB), [recipient])

    class Failing(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > MIB:
                raise ConnectionResetError("the storage closed the connection")
            return super().read(size)

    with (
        pytest.raises(ConnectionResetError, match="closed the connection"),
        decrypted(Failing(ciphertext), [identity]) as plain,
    ):
        while plain.read(MIB):
            pass


def test_a_damaged_header_is_refused_on_entry():
    identity, recipient = key_pair()
    ciphertext = bytearray(encrypt(os.urandom(MIB), [recipient]))
    ciphertext[40] ^= 0x01
    with pytest.raises(EncryptionError), decrypted(io.BytesIO(bytes(ciphertext)), [identity]):
        pytest.fail("entered the block with a damaged header")


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_it_fails_a_damaged_or_truncated_stream(damage):
    identity, recipient = key_pair()
    ciphertext = bytearray(encrypt(os.urandom(3 * MIB), [recipient]))
    if damage == "flipped byte":
        ciphertext[2 * MIB] ^= 0x01
    else:
        del ciphertext[-1000:]
    with pytest.raises(EncryptionError, match="damaged or truncated"):
        decrypt(bytes(ciphertext), [identity])


def test_it_stops_the_decrypting_thread_when_the_reader_leaves_early():
    identity, recipient = key_pair()
    ciphertext = encrypt(os.urandom(16 * MIB), [recipient])
    with decrypted(io.BytesIO(ciphertext), [identity]) as plain:
        assert len(plain.read(1024)) == 1024
    # Leaving the block closed the pipe and joined the thread: nothing hangs, nothing leaks.


def test_it_names_bad_recipients_and_never_repeats_an_identity():
    with pytest.raises(EncryptionError, match="not an age X25519 recipient"):
        parse_recipient("age1notarecipient")
    with pytest.raises(EncryptionError, match="no recipient"):
        AgeEncryptor([])
    secretish = "AGE-SECRET-KEY-1NOTAREALKEYBUTLOOKSLIKEONE"
    with pytest.raises(EncryptionError) as bad:
        parse_identity(secretish)
    assert secretish not in str(bad.value) and "AGE-SECRET-KEY-1..." in str(bad.value)
    identity, _ = key_pair()
    with pytest.raises(EncryptionError):
        parse_identity(f"{identity}\n{identity}\n")  # two keys where one is expected


def encrypting_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "age-encrypt")


def wait_for_no_encrypting_thread(before: int) -> None:
    deadline = time.monotonic() + 5
    while encrypting_threads() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert encrypting_threads() == before


def test_it_ends_its_thread_when_the_backup_fails_midway_or_drops_it():
    """A worker runs thousands of backups: a failed one must not leave a thread waiting."""
    _, recipient = key_pair()
    before = encrypting_threads()

    class FullDisk:
        def write(self, data: bytes) -> None:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        stream_backup(
            io.BytesIO(os.urandom(4 * MIB)),
            [FullDisk()],
            "none",
            extra_transforms=[AgeEncryptor([recipient])],
        )
    wait_for_no_encrypting_thread(before)
    dropped = AgeEncryptor([recipient])
    dropped.update(os.urandom(MIB))
    del dropped  # neither finished nor closed
    gc.collect()
    wait_for_no_encrypting_thread(before)
