"""Remote storages in the TOML file, the storage system check and the admin's storage form:
each kind's own option rules, secrets only as references, probes against real servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks

from backups.config import loader as config
from backups.models import Storage
from tests.config_builder import toml_text
from tests.servers.s3 import S3Server

pytestmark = pytest.mark.django_db


def apply(tmp_path: Path, text: str, probe: bool = True) -> config.ApplyReport | None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return config.apply(config.load(path), probe=probe)


def errors(tmp_path: Path, text: str, probe: bool = True) -> list[str]:
    with pytest.raises(config.ConfigInvalid) as caught:
        apply(tmp_path, text, probe)
    return caught.value.errors


def s3_table(server: S3Server, bucket: str, **extra: Any) -> str:
    """The storage offsite on ``server``: its keys as references, ``extra`` added or replacing."""
    offsite = {
        "kind": "s3",
        "bucket": bucket,
        "endpoint_url": server.endpoint_url,
        "region": server.region,
        "addressing_style": "path",
        "access_key": "${TEST_S3_ACCESS_KEY}",
        "secret_key": "${TEST_S3_SECRET_KEY}",
        **extra,
    }
    return toml_text(storages={"offsite": offsite})


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_S3_ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("TEST_S3_SECRET_KEY", s3_server.secret_key)


def test_it_checks_an_s3_storage_against_the_server_and_applies_it(
    tmp_path: Path, s3_server: S3Server, s3_bucket: Any, s3_env: None
) -> None:
    bucket = s3_bucket()
    apply(tmp_path, s3_table(s3_server, bucket, required=False, prefix="site"))
    row = Storage.objects.get(name="offsite")
    assert (row.kind, row.prefix, row.required) == ("s3", "site", False)
    assert row.options["secret_key"] == "${TEST_S3_SECRET_KEY}"  # the reference, never the value
    assert s3_server.secret_key not in str(row.options)


def test_it_reports_a_missing_bucket_as_a_probe_error_naming_the_storage(
    tmp_path: Path, s3_server: S3Server, s3_env: None
) -> None:
    found = errors(tmp_path, s3_table(s3_server, "no-such-bucket"))
    assert len(found) == 1 and found[0].startswith("storages.offsite: ")
    assert "no-such-bucket" in found[0]
    assert not Storage.objects.exists()
    apply(tmp_path, s3_table(s3_server, "no-such-bucket"), probe=False)  # --skip-probes
    assert Storage.objects.filter(name="offsite").exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"secret_key": "plain-text-secret"}, "storages.offsite.secret_key: write secrets as ${ENV_VAR}"),
        ({"colour": "blue"}, "storages.offsite.colour: unknown key"),
        ({"part_size_mib": "8"}, "storages.offsite.part_size_mib: must be a whole number"),
        (
            {"server_side_encryption": "rot13"},
            "storages.offsite.server_side_encryption: must be one of AES256",
        ),
        ({"object_lock_mode": "COMPLIANCE"}, "storages.offsite.object_lock_days"),
        ({"required": "no"}, "storages.offsite.required: must be true or false"),
    ],
)
def test_it_rejects_bad_s3_options_by_name_and_changes_nothing(
    tmp_path: Path, s3_server: S3Server, extra: dict[str, str], expected: str
) -> None:
    found = errors(tmp_path, s3_table(s3_server, "b", **extra), probe=False)
    assert any(message.startswith(expected) for message in found), found
    assert "plain-text-secret" not in " ".join(found)
    assert not Storage.objects.exists()


def test_it_needs_a_host_key_source_and_a_credential_for_an_sftp_storage(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        toml_text(storages={"box": {"kind": "sftp", "host": "backup.example.net", "user": "backup"}}),
        probe=False,
    )
    text = " ".join(found)
    assert "known_hosts" in text and "host_key_fingerprint" in text
    assert "password" in text and "private_key" in text


def test_it_resolves_relative_key_files_against_the_toml_file(tmp_path: Path) -> None:
    apply(
        tmp_path,
        toml_text(
            storages={
                "box": {
                    "kind": "sftp",
                    "host": "h",
                    "user": "u",
                    "private_key": "keys/id_ed25519",
                    "known_hosts": "keys/known_hosts",
                }
            }
        ),
        probe=False,
    )
    options = Storage.objects.get(name="box").options
    assert options["private_key"] == str(tmp_path / "keys" / "id_ed25519")
    assert options["known_hosts"] == str(tmp_path / "keys" / "known_hosts")


def test_it_needs_allow_plaintext_for_plain_ftp(tmp_path: Path) -> None:
    ftp = {"kind": "ftp", "host": "h", "user": "u", "password": "${FTP_PASSWORD}", "tls": False}
    found = errors(tmp_path, toml_text(storages={"ftp": ftp}), probe=False)
    assert any("allow_plaintext" in message for message in found), found
    apply(tmp_path, toml_text(storages={"ftp": {**ftp, "allow_plaintext": True}}), probe=False)


def test_it_reports_a_storage_that_cannot_be_built_in_the_system_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Storage.objects.create(name="broken", kind="s3", options={"region": "eu-central-1"})
    Storage.objects.create(
        name="unresolved",
        kind="s3",
        options={"bucket": "b", "access_key": "${NOT_SET_HERE}", "secret_key": "${NOT_SET_HERE}"},
    )
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    by_id = {message.id: message for message in run_checks() if (message.id or "").startswith("backups.")}
    assert "storage 'broken' cannot be built" in by_id["backups.E003"].msg
    assert "bucket" in by_id["backups.E003"].msg
    assert "NOT_SET_HERE" in by_id["backups.W001"].msg


def test_it_applies_the_kinds_rules_in_the_admin_form(admin_client: Any) -> None:
    form = {"name": "offsite", "kind": "s3", "prefix": "", "required": "on"}
    response = admin_client.post(
        "/admin/backups/storage/add/", {**form, "options": '{"bucket": "b", "secret_key": "plaintext!"}'}
    )
    assert response.status_code == 200  # the form again, with errors
    page = response.content.decode()
    assert "secret_key: write secrets as ${ENV_VAR}" in page
    assert not Storage.objects.exists()
    response = admin_client.post("/admin/backups/storage/add/", {**form, "options": '{"bucket": 5}'})
    assert "bucket: must be a string" in response.content.decode()
    response = admin_client.post(
        "/admin/backups/storage/add/",
        {**form, "options": '{"bucket": "b", "access_key": "${K}", "secret_key": "${S}"}'},
    )
    assert response.status_code == 302
    assert Storage.objects.get(name="offsite").options["bucket"] == "b"
