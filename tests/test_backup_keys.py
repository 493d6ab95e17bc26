"""The key catalog's command line (backup_keys) and admin pages: key files written 0600 and never
overwritten, no private key ever printed, Debian's ``age`` decrypting with a generated file,
bad input changing nothing, rotation moving a target and its schedules while old backups keep
their key id, every key's status, retirement refused while live backups need a key, and the
admin forms refusing unknown and retired key names on their fields."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from backups import services
from backups.models import AuditEvent, Backup, BackupStatus, EncryptionKey, Target
from schedules.models import BackupSchedule
from tests.conftest import digest

pytestmark = pytest.mark.django_db

AGE = shutil.which("age") or "/usr/bin/age"
AGE_KEYGEN = shutil.which("age-keygen") or "/usr/bin/age-keygen"


def keys(*args: str) -> str:
    out = StringIO()
    call_command("backup_keys", *args, stdout=out)
    return out.getvalue()


def refused(*args: str) -> CommandError:
    with pytest.raises(CommandError) as caught:
        keys(*args)
    assert caught.value.returncode == 1
    assert "\n" not in str(caught.value)  # one line
    return caught.value


def age_keygen(path: Path) -> str:
    """A key file written by Debian's age-keygen; its recipient."""
    subprocess.run([AGE_KEYGEN, "-o", str(path)], check=True, capture_output=True)
    return subprocess.run(
        [AGE_KEYGEN, "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()


def key_events(outcome: str = "success") -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action__startswith="key.", outcome=outcome, auth_method="cli"))


# -- generate ---------------------------------------------------------------------------------------


def test_it_generates_a_0600_key_file_and_never_prints_the_identity(manage, tmp_path):
    result = manage("backup_keys", "generate", "prod")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "home" / "secrets" / "prod.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    identity = next(line for line in path.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-1"))
    output = result.stdout + result.stderr
    assert "AGE-SECRET-KEY" not in output and identity not in output
    [listed] = json.loads(manage("backup_keys", "status", "--json").stdout)
    assert listed["identity"] == f"${{file:{path}}}" and listed["can_decrypt"] is True
    assert f"generated key prod\n  id         {listed['fingerprint']}\n" in result.stdout
    assert f"  recipient  {listed['recipient']}\n  key file   {path} (0600)\n" in result.stdout
    assert "this host can decrypt its backups" in result.stdout

    # Never overwritten: another name onto the same file is refused, and nothing is registered.
    before = digest(path)
    again = manage("backup_keys", "generate", "other", "--out", str(path))
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"CommandError: generate other: {path} exists already; choose another --out "
        "(a key file is never overwritten)"
    )
    assert digest(path) == before
    assert [row["name"] for row in json.loads(manage("backup_keys", "status", "--json").stdout)] == ["prod"]
    # The same name twice is refused before any file is written.
    twice = manage("backup_keys", "generate", "prod", "--out", str(tmp_path / "second.key"))
    assert twice.returncode == 1 and "a key named 'prod' exists already" in twice.stderr
    assert not (tmp_path / "second.key").exists()


def test_debians_age_decrypts_with_the_generated_file_what_is_encrypted_to_the_printed_recipient(
    key_dir, tmp_path
):
    output = keys("generate", "prod", "--out", str(key_dir / "prod.key"))
    recipient = next(line.split()[1] for line in output.splitlines() if line.startswith("  recipient"))
    assert recipient == EncryptionKey.objects.get(name="prod").recipient
    secret = b"a message only prod can read\n"
    encrypted = subprocess.run([AGE, "-r", recipient], input=secret, capture_output=True, check=True).stdout
    decrypted = subprocess.run(
        [AGE, "-d", "-i", str(key_dir / "prod.key")], input=encrypted, capture_output=True, check=True
    ).stdout
    assert decrypted == secret
    (event,) = key_events()
    assert event.details["change"] == "generated" and event.object_repr == "prod"
    assert "AGE-SECRET-KEY" not in json.dumps(event.details)


def test_it_refuses_a_bad_name_before_writing_a_file(key_dir):
    error = refused("generate", "../escape", "--out", str(key_dir / "escape.key"))
    assert str(error).startswith("generate ../escape: NAME: Enter a valid")
    assert not (key_dir / "escape.key").exists() and not EncryptionKey.objects.exists()


# -- add --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipient", "message"),
    [
        ("age1notakey", "--recipient: not an age X25519 recipient (age1...): 'age1notakey'"),
        ("ssh-ed25519 AAAA", "--recipient: not an age X25519 recipient"),
    ],
)
def test_it_refuses_a_bad_recipient_and_changes_nothing(manage, recipient, message):
    result = manage("backup_keys", "add", "offline", "--recipient", recipient)
    assert result.returncode == 1
    assert result.stderr.startswith(f"CommandError: add offline: {message}")
    assert "age-keygen -y" in result.stderr  # the fix
    assert json.loads(manage("backup_keys", "status", "--json").stdout) == []


def test_it_never_repeats_a_private_key_given_as_recipient(key_dir):
    age_keygen(key_dir / "k.key")
    identity = (key_dir / "k.key").read_text().splitlines()[-1]
    error = refused("add", "offline", "--recipient", identity)
    assert identity not in str(error) and "that is a private key" in str(error)
    assert not EncryptionKey.objects.exists()
    (event,) = key_events("refused")
    assert event.details["change"] == "added" and identity not in json.dumps(event.details)


def test_it_refuses_an_identity_that_is_not_a_reference(key_dir):
    recipient = age_keygen(key_dir / "k.key")
    identity = (key_dir / "k.key").read_text().splitlines()[-1]
    error = refused("add", "offline", "--recipient", recipient, "--identity", identity)
    assert "identity: write where the key file is" in str(error) and identity not in str(error)
    assert not EncryptionKey.objects.exists()


def test_it_adds_an_escrow_key_without_an_identity(key_dir):
    recipient = age_keygen(key_dir / "offline.key")
    output = keys("add", "offline", "--recipient", recipient)
    key = EncryptionKey.objects.get(name="offline")
    assert (key.recipient, key.identity) == (recipient, "")
    assert output == (
        f"added key offline\n  id         {key.fingerprint}\n  recipient  {recipient}\n"
        "  identity   none on this host: backups can be encrypted to it, not decrypted here\n"
    )
    error = refused("add", "again", "--recipient", recipient)
    assert (
        str(error) == "add again: --recipient: already in the catalog as key 'offline'; a key is added once"
    )


# -- rotate -----------------------------------------------------------------------------------------


def test_rotate_moves_the_target_and_its_schedules_and_old_backups_keep_their_key_id(sqlite_target, key_dir):
    prod, _ = services.generate_key("prod", key_dir / "prod.key")
    nxt, _ = services.generate_key("next", key_dir / "next.key")
    sqlite_target.encryption = "prod"
    sqlite_target.save()
    nightly = BackupSchedule.objects.create(
        name="nightly", target=sqlite_target, cron_expression="0 3 * * *", encryption="prod"
    )
    weekly = BackupSchedule.objects.create(name="weekly", target=sqlite_target, cron_expression="0 4 * * 0")
    old = services.run_backup(sqlite_target)
    assert old.status == BackupStatus.SUCCESS and old.encryption_key_id == prod.fingerprint

    output = keys("rotate", "--target", "app-db", "--to", "next")
    lines = output.splitlines()
    assert lines[:2] == ["target app-db: prod -> next", "schedule nightly: prod -> next"]
    assert "backups made so far keep key prod" in lines[2]
    assert lines[3] == (
        'configuration file: write encryption = "next" where it names "prod" for target app-db and its '
        "schedules, or the next backup_config apply puts prod back"
    )
    assert Target.objects.get(pk=sqlite_target.pk).encryption == "next"
    assert BackupSchedule.objects.get(pk=nightly.pk).encryption == "next"
    assert BackupSchedule.objects.get(pk=weekly.pk).encryption == ""  # it follows the target
    assert Backup.objects.get(pk=old.pk).encryption_key_id == prod.fingerprint
    new = services.run_backup(Target.objects.get(pk=sqlite_target.pk))
    assert new.encryption_key_id == nxt.fingerprint
    (event,) = key_events()
    assert (event.object_type, event.object_repr) == ("backups.target", "app-db")
    assert event.details["from"] == "prod" and event.details["to"] == "next"

    assert keys("rotate", "--target", "app-db", "--to", "next") == (
        "target app-db already uses key next; nothing changed\n"
    )


def test_rotate_refuses_an_unknown_target_or_key_and_changes_nothing(sqlite_target, key_dir):
    services.generate_key("prod", key_dir / "prod.key")
    sqlite_target.encryption = "prod"
    sqlite_target.save()
    assert str(refused("rotate", "--target", "nope", "--to", "prod")) == (
        "--target: no target named 'nope'; known targets: app-db"
    )
    assert str(refused("rotate", "--target", "app-db", "--to", "nope")) == (
        "--to: no key named 'nope'; backup_keys status lists them"
    )
    assert Target.objects.get(pk=sqlite_target.pk).encryption == "prod"
    assert len(key_events("refused")) == 2


# -- status -----------------------------------------------------------------------------------------


def test_status_counts_live_backups_and_says_why_this_host_cannot_decrypt(sqlite_target, key_dir):
    services.generate_key("prod", key_dir / "prod.key")
    services.generate_key("lost", key_dir / "lost.key")
    (key_dir / "lost.key").unlink()
    keys("add", "offline", "--recipient", age_keygen(key_dir / "elsewhere.key"))
    (key_dir / "elsewhere.key").unlink()
    # Its reference names prod's file: this host holds the identity of another key.
    keys("add", "swapped", "--recipient", age_keygen(key_dir / "swapped.key"), "--identity",
         f"${{file:{key_dir / 'prod.key'}}}")  # fmt: skip
    sqlite_target.encryption = "prod"
    sqlite_target.escrow = ["offline"]
    sqlite_target.save()
    for _ in range(2):
        assert services.run_backup(sqlite_target).status == BackupStatus.SUCCESS
    gone = services.run_backup(sqlite_target)
    Backup.objects.filter(pk=gone.pk).update(deleted_at=timezone.now())  # no longer live

    rows = {row["name"]: row for row in json.loads(keys("status", "--json"))}
    assert list(rows) == ["lost", "offline", "prod", "swapped"]
    counts = {
        name: (row["live_backups"], row["own_backups"], row["escrow_backups"]) for name, row in rows.items()
    }
    assert counts == {"lost": (0, 0, 0), "offline": (2, 0, 2), "prod": (2, 2, 0), "swapped": (0, 0, 0)}
    assert rows["prod"]["used_by"] == ["target app-db"] and rows["offline"]["used_by"] == ["target app-db"]
    assert {name: row["can_decrypt"] for name, row in rows.items()} == {
        "lost": False, "offline": False, "prod": True, "swapped": False,
    }  # fmt: skip
    assert "this host has no identity for key offline" in rows["offline"]["why"]
    assert f"secret file {key_dir / 'lost.key'} does not exist" in rows["lost"]["why"]
    assert "holds the identity of another key" in rows["swapped"]["why"]
    assert rows["prod"]["why"] == "" and rows["prod"]["identity"] == f"${{file:{key_dir / 'prod.key'}}}"

    table = keys("status").splitlines()
    assert table[0].split() == [
        "KEY",
        "ID",
        "CREATED",
        "RETIRED",
        "LIVE",
        "BACKUPS",
        "DECRYPTS",
        "HERE",
        "USED",
        "BY",
    ]
    prod = EncryptionKey.objects.get(name="prod")
    row = next(line for line in table if line.startswith("prod "))
    assert row.split() == [
        "prod", prod.fingerprint, f"{timezone.localtime(prod.created_at):%Y-%m-%d}", "-", "2", "(2", "own,",
        "0", "escrow)", "yes", "target", "app-db",
    ]  # fmt: skip
    after = table[table.index(row) + 1]
    assert after.split() == ["recipient", prod.recipient]
    offline = next(line for line in table if line.startswith("offline "))
    assert "2 (0 own, 2 escrow)" in offline and " NO " in offline
    assert any("cannot decrypt here: keys.lost.identity" in line for line in table)
    assert "AGE-SECRET-KEY" not in "\n".join(table)


def test_status_says_when_there_are_no_keys(db):
    assert keys("status") == "no encryption keys; backup_keys generate NAME makes one\n"
    assert json.loads(keys("status", "--json")) == []


# -- retire -----------------------------------------------------------------------------------------


def test_retire_is_refused_with_the_count_while_a_live_backup_needs_the_key(sqlite_target, key_dir):
    old, _ = services.generate_key("old", key_dir / "old.key")
    backup = Backup.objects.create(
        target=sqlite_target, backup_name="app-db-old", status=BackupStatus.SUCCESS, encryption="age",
        encryption_key_id=old.fingerprint, encryption_recipients=[old.recipient],
    )  # fmt: skip
    error = refused("retire", "old")
    assert str(error) == (
        "key old is still needed by 1 live backup(s) (1 encrypted to it, the rest with it as escrow); "
        "retire it once retention has removed them, and keep its identity until then"
    )
    assert EncryptionKey.objects.get(name="old").retired_at is None
    (event,) = key_events("refused")
    assert event.details["change"] == "retired" and event.object_repr == "old"

    Backup.objects.filter(pk=backup.pk).update(deleted_at=timezone.now())
    assert (
        keys("retire", "old") == f"retired key old (id {old.fingerprint}): no new backup is encrypted to it\n"
    )
    retired = EncryptionKey.objects.get(name="old")
    assert retired.retired_at is not None
    assert keys("retire", "old").startswith("key old was retired on ")
    assert str(refused("retire", "nope")) == "no key named 'nope'; backup_keys status lists them"
    sqlite_target.encryption = "old"
    with pytest.raises(Exception, match="retired"):
        sqlite_target.full_clean()


# -- the admin --------------------------------------------------------------------------------------


def test_the_admin_lists_keys_with_their_live_backups_and_never_deletes_one(
    admin_client, sqlite_target, key_dir
):
    prod, _ = services.generate_key("prod", key_dir / "prod.key")
    services.register_key("offline", age_keygen(key_dir / "offline.key"))
    sqlite_target.encryption = "prod"
    sqlite_target.escrow = ["offline"]
    sqlite_target.save()
    assert services.run_backup(sqlite_target).status == BackupStatus.SUCCESS

    page = admin_client.get("/admin/backups/encryptionkey/").content.decode()
    assert prod.fingerprint in page and f"{prod.recipient[:12]}…{prod.recipient[-6:]}" in page
    assert f"${{file:{key_dir / 'prod.key'}}}" in page and "none on this host" in page
    assert "1 (1 own, 0 escrow)" in page and "1 (0 own, 1 escrow)" in page
    assert 'value="delete_selected"' not in page and 'value="retire"' in page

    change = admin_client.get(f"/admin/backups/encryptionkey/{prod.pk}/change/").content.decode()
    assert 'name="identity"' in change
    assert 'name="recipient"' not in change and 'name="name"' not in change  # fixed once added
    identity = (key_dir / "prod.key").read_text().splitlines()[-1]
    assert prod.recipient in change and "target app-db" in change and identity not in change
    assert admin_client.get(f"/admin/backups/encryptionkey/{prod.pk}/delete/").status_code == 403

    # The recipient cannot be changed by posting it anyway.
    response = admin_client.post(
        f"/admin/backups/encryptionkey/{prod.pk}/change/",
        {"name": "renamed", "recipient": age_keygen(key_dir / "other.key"), "identity": ""},
    )
    assert response.status_code == 302
    kept = EncryptionKey.objects.get(pk=prod.pk)
    assert (kept.name, kept.recipient, kept.identity) == ("prod", prod.recipient, "")


def test_the_admin_adds_a_key_and_refuses_a_private_key_or_a_literal_identity(admin_client, key_dir):
    recipient = age_keygen(key_dir / "offline.key")
    identity = (key_dir / "offline.key").read_text().splitlines()[-1]
    response = admin_client.post(
        "/admin/backups/encryptionkey/add/", {"name": "offline", "recipient": identity, "identity": ""}
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["recipient"] and identity not in errors["recipient"][0]
    response = admin_client.post(
        "/admin/backups/encryptionkey/add/", {"name": "offline", "recipient": recipient, "identity": identity}
    )
    assert list(response.context["adminform"].form.errors) == ["identity"]
    assert not EncryptionKey.objects.exists()
    response = admin_client.post(
        "/admin/backups/encryptionkey/add/",
        {"name": "offline", "recipient": recipient, "identity": f"${{file:{key_dir / 'offline.key'}}}"},
    )
    assert response.status_code == 302
    assert EncryptionKey.objects.get(name="offline").fingerprint
    # Names are unique whatever their case (targets name keys by name).
    response = admin_client.post(
        "/admin/backups/encryptionkey/add/",
        {"name": "OFFLINE", "recipient": age_keygen(key_dir / "another.key"), "identity": ""},
    )
    assert response.status_code == 200 and EncryptionKey.objects.count() == 1


def test_the_admin_retires_a_key_only_once_no_live_backup_needs_it(admin_client, sqlite_target, key_dir):
    old, _ = services.generate_key("old", key_dir / "old.key")
    backup = Backup.objects.create(
        target=sqlite_target, backup_name="app-db-old", status=BackupStatus.SUCCESS, encryption="age",
        encryption_key_id=old.fingerprint, encryption_recipients=[old.recipient],
    )  # fmt: skip
    action = {"action": "retire", "_selected_action": [old.pk]}
    page = admin_client.post("/admin/backups/encryptionkey/", action, follow=True).content.decode()
    assert "still needed by 1 live backup(s)" in page
    assert EncryptionKey.objects.get(pk=old.pk).retired_at is None
    assert AuditEvent.objects.filter(action="key.retire", outcome="refused", object_repr="old").exists()
    Backup.objects.filter(pk=backup.pk).update(deleted_at=timezone.now())
    page = admin_client.post("/admin/backups/encryptionkey/", action, follow=True).content.decode()
    assert "Retired key old" in page and EncryptionKey.objects.get(pk=old.pk).retired_at is not None


def target_form(target: Target, **values: str) -> dict[str, object]:
    form: dict[str, object] = {
        "name": target.name, "engine": target.engine, "is_active": "on", "compression": target.compression,
        "database": target.database, "timezone": target.timezone, "options": "{}", "escrow": "[]",
        "encryption": "", "storages": [storage.pk for storage in target.storages.all()],
    }  # fmt: skip
    return {**form, **values}


def test_the_target_admin_names_encryption_keys_and_refuses_unknown_or_retired_ones(
    admin_client, sqlite_target, key_dir
):
    url = f"/admin/backups/target/{sqlite_target.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'name="encryption"' in page and 'name="escrow"' in page
    assert "The name of the encryption key" in page  # the model's help text

    response = admin_client.post(url, target_form(sqlite_target, encryption="nope"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["encryption"] and "no encryption key named 'nope'" in errors["encryption"][0]

    services.generate_key("prod", key_dir / "prod.key")
    retired, _ = services.generate_key("old", key_dir / "old.key")
    EncryptionKey.objects.filter(pk=retired.pk).update(retired_at=timezone.now())
    response = admin_client.post(url, target_form(sqlite_target, encryption="prod", escrow='["old"]'))
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["escrow"] and "key 'old' is retired" in errors["escrow"][0]
    assert Target.objects.get(pk=sqlite_target.pk).encryption == ""

    response = admin_client.post(url, target_form(sqlite_target, encryption="prod"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Target.objects.get(pk=sqlite_target.pk).encryption == "prod"


def test_the_schedule_admin_refuses_an_unknown_key_on_its_field(admin_client, sqlite_target):
    form = {
        "name": "nightly", "target": sqlite_target.pk, "backup_type": "full", "cron_expression": "0 3 * * *",
        "timezone": "UTC", "compression": "gzip", "encryption": "nope", "escrow": "[]", "retention": "{}",
        "include_files": "[]", "include_tables": "[]", "exclude_tables": "[]", "notify_channels": "[]",
        "is_active": "on", "verify": "never",
    }  # fmt: skip
    page = admin_client.get("/admin/schedules/backupschedule/add/").content.decode()
    assert 'name="encryption"' in page and 'name="escrow"' in page
    response = admin_client.post("/admin/schedules/backupschedule/add/", form)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["encryption"] and "no encryption key named 'nope'" in errors["encryption"][0]
    assert not BackupSchedule.objects.exists()
