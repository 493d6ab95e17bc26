"""Secret references: resolution from the environment and files, and redaction everywhere."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from backups.secrets import (
    RedactingFilter,
    SecretError,
    check_resolvable,
    is_reference_only,
    redact,
    references,
    resolve,
)


def unique_secret() -> str:
    """A value no other test has resolved: redaction state is per process."""
    return f"s3cr3t-{uuid.uuid4().hex}"


def test_it_resolves_an_environment_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = unique_secret()
    monkeypatch.setenv("BACKUPSITE_TEST_PASSWORD", secret)
    assert resolve("${BACKUPSITE_TEST_PASSWORD}") == secret


def test_it_resolves_a_file_reference_without_the_trailing_newline(tmp_path: Path) -> None:
    secret = unique_secret()
    path = tmp_path / "db.pass"
    path.write_text(secret + "\r\n")
    assert resolve(f"${{file:{path}}}") == secret


@pytest.mark.parametrize(
    "variable", ["SECRET_KEY_FILE", "DATABASE_PASSWORD_FILE", "BACKUPSITE_METRICS_TOKEN_FILE"]
)
def test_it_refuses_a_file_reference_to_a_file_backupsite_reads_its_own_secret_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    # Compose and Kubernetes mount the app's secrets in /run/secrets, a secret directory: a
    # target's editor could otherwise point a password at the Django key and send it anywhere.
    secret = unique_secret()
    own = tmp_path / "own.secret"
    own.write_text(secret)
    linked = tmp_path / "linked.secret"
    linked.hardlink_to(own)
    monkeypatch.setenv(variable, str(own))
    for path in (own, linked):
        with pytest.raises(SecretError, match="Backupsite reads one of its own secrets") as refused:
            resolve(f"${{file:{path}}}", "password")
        assert secret not in str(refused.value)
    assert check_resolvable(f"${{file:{own}}}") is not None
    monkeypatch.delenv(variable)
    assert resolve(f"${{file:{own}}}") == secret


def test_it_resolves_several_references_inside_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    user, password = unique_secret(), unique_secret()
    monkeypatch.setenv("BACKUPSITE_TEST_USER", user)
    path = tmp_path / "pw"
    path.write_text(password)
    value = f"postgres://${{BACKUPSITE_TEST_USER}}:${{file:{path}}}@db/app"
    assert resolve(value) == f"postgres://{user}:{password}@db/app"


def test_it_leaves_text_without_references_alone() -> None:
    assert resolve("plain $HOME and {braces}") == "plain $HOME and {braces}"
    assert resolve("") == ""


def test_it_names_a_missing_variable_and_no_value(monkeypatch: pytest.MonkeyPatch) -> None:
    present = unique_secret()
    monkeypatch.setenv("BACKUPSITE_TEST_PRESENT", present)
    monkeypatch.delenv("BACKUPSITE_TEST_MISSING", raising=False)
    with pytest.raises(SecretError) as caught:
        resolve("${BACKUPSITE_TEST_PRESENT}:${BACKUPSITE_TEST_MISSING}")
    message = str(caught.value)
    assert "BACKUPSITE_TEST_MISSING" in message
    assert "not set" in message
    assert present not in message


def test_it_treats_an_empty_variable_as_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUPSITE_TEST_EMPTY", "")
    assert resolve("[${BACKUPSITE_TEST_EMPTY}]") == "[]"


def test_it_names_a_missing_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.pass"
    with pytest.raises(SecretError, match=f"secret file {path} does not exist"):
        resolve(f"${{file:{path}}}")


def test_it_reports_a_secret_file_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="is a directory, not a regular file"):
        resolve(f"${{file:{tmp_path}}}")


def test_it_checks_resolvability_without_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUPSITE_TEST_OK", unique_secret())
    monkeypatch.delenv("BACKUPSITE_TEST_NOPE", raising=False)
    assert check_resolvable("${BACKUPSITE_TEST_OK}") is None
    assert (
        check_resolvable("${BACKUPSITE_TEST_NOPE}") == "environment variable BACKUPSITE_TEST_NOPE is not set"
    )


def test_it_lists_references() -> None:
    assert references("a ${X} b ${file:/run/secrets/pw} c $Y") == ["${X}", "${file:/run/secrets/pw}"]
    assert references("nothing") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", True),
        ("   ", True),
        ("${DB_PASSWORD}", True),
        ("${file:/run/secrets/db}", True),
        ("${A}${B}", True),
        (" ${A} ", True),
        ("hunter2", False),
        ("${A}hunter2", False),
        ("$DB_PASSWORD", False),
        ("${1BAD}", False),
        ("${}", False),
    ],
)
def test_it_tells_reference_only_values_from_literal_secrets(value: str, expected: bool) -> None:
    assert is_reference_only(value) is expected


def test_it_redacts_resolved_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = unique_secret()
    monkeypatch.setenv("BACKUPSITE_TEST_REDACT", secret)
    resolve("${BACKUPSITE_TEST_REDACT}")
    text = redact(f"connection to db failed: password {secret} rejected, {secret}!")
    assert secret not in text
    assert text == "connection to db failed: password ******** rejected, ********!"


def test_it_redacts_secrets_from_files(tmp_path: Path) -> None:
    secret = unique_secret()
    path = tmp_path / "pw"
    path.write_text(secret + "\n")
    resolve(f"${{file:{path}}}")
    assert redact(f"<{secret}>") == "<********>"


def test_it_does_not_redact_values_never_resolved() -> None:
    never = unique_secret()
    assert redact(f"value {never}") == f"value {never}"


def test_it_does_not_redact_very_short_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUPSITE_TEST_SHORT", "ab")
    assert resolve("${BACKUPSITE_TEST_SHORT}") == "ab"
    assert redact("a cab and a tab") == "a cab and a tab"


def test_it_redacts_the_longer_of_overlapping_secrets_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    short = unique_secret()
    long = short + "-and-more"
    monkeypatch.setenv("BACKUPSITE_TEST_SHORTER", short)
    monkeypatch.setenv("BACKUPSITE_TEST_LONGER", long)
    resolve("${BACKUPSITE_TEST_SHORTER} ${BACKUPSITE_TEST_LONGER}")
    assert redact(f"x {long} y") == "x ******** y"


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(self.format(record))


@pytest.fixture
def redacted_logger() -> tuple[logging.Logger, ListHandler]:
    logger = logging.getLogger(f"backupsite.tests.secrets.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = ListHandler()
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    return logger, handler


def test_it_masks_a_secret_in_log_record_args(
    redacted_logger: tuple[logging.Logger, ListHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, handler = redacted_logger
    secret = unique_secret()
    monkeypatch.setenv("BACKUPSITE_TEST_LOGGED", secret)
    resolve("${BACKUPSITE_TEST_LOGGED}")
    logger.warning("login with %s for user %s failed (%d)", secret, "admin", 3)
    assert handler.messages == ["login with ******** for user admin failed (3)"]


def test_it_masks_a_secret_in_the_log_message_itself(
    redacted_logger: tuple[logging.Logger, ListHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, handler = redacted_logger
    secret = unique_secret()
    monkeypatch.setenv("BACKUPSITE_TEST_LOGGED2", secret)
    resolve("${BACKUPSITE_TEST_LOGGED2}")
    logger.error(f"dsn=postgres://u:{secret}@h/db")
    assert handler.messages == ["dsn=postgres://u:********@h/db"]


def test_it_masks_secrets_seen_by_caplog_through_the_filter(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = unique_secret()
    monkeypatch.setenv("BACKUPSITE_TEST_CAPLOG", secret)
    resolve("${BACKUPSITE_TEST_CAPLOG}")
    redacting = RedactingFilter()
    caplog.handler.addFilter(redacting)
    try:
        with caplog.at_level(logging.INFO, logger="backupsite.tests.caplog"):
            logging.getLogger("backupsite.tests.caplog").info("token=%s", secret)
    finally:
        caplog.handler.removeFilter(redacting)
    assert secret not in caplog.text
    assert caplog.messages == ["token=********"]


def test_it_keeps_ordinary_log_records_intact(redacted_logger: tuple[logging.Logger, ListHandler]) -> None:
    logger, handler = redacted_logger
    logger.info("backup %s of %s done", 7, "app-db")
    assert handler.messages == ["backup 7 of app-db done"]


def test_it_masks_a_secret_in_a_logged_exception(
    redacted_logger: tuple[logging.Logger, ListHandler], monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, handler = redacted_logger
    secret = unique_secret()
    monkeypatch.setenv("BACKUPSITE_TEST_TRACEBACK", secret)
    dsn = resolve("postgres://u:${BACKUPSITE_TEST_TRACEBACK}@h/db")
    try:
        raise ConnectionError(f"could not connect to {dsn}")
    except ConnectionError as exc:
        logger.error("backup failed", exc_info=exc)
    assert handler.messages and handler.messages[0].startswith("backup failed")
    assert secret not in handler.messages[0]
    assert "ConnectionError: could not connect to postgres://u:********@h/db" in handler.messages[0]
