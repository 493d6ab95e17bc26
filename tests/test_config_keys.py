"""Encryption keys in the TOML file (issue 19): ``[keys.NAME]`` tables, ``encryption`` and
``escrow`` on targets and schedules, each problem under its key path, an identity only ever a
reference (never echoed), and a host that restores holding the identity of every key it
encrypts to (BACKUPSITE_RESTORES_HERE)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from pyrage import x25519

from backups import services
from backups.config import loader as config
from backups.models import Backup, BackupStatus, EncryptionKey, Target
from schedules.models import BackupSchedule

pytestmark = pytest.mark.django_db


class KeyFile:
    """An age key file as age-keygen writes it, in a secret directory."""

    def __init__(self, directory: Path, name: str) -> None:
        identity = x25519.Identity.generate()
        self.recipient = str(identity.to_public())
        self.secret = str(identity)
        self.path = directory / f"{name}.key"
        self.path.write_text(f"# public key: {self.recipient}\n{self.secret}\n")
        self.path.chmod(0o600)
        self.reference = f"${{file:{self.path}}}"


@pytest.fixture
def prod(key_dir: Path) -> KeyFile:
    return KeyFile(key_dir, "prod")


@pytest.fixture
def offline(key_dir: Path) -> KeyFile:
    return KeyFile(key_dir, "offline")


@pytest.fixture
def keys(prod: KeyFile, offline: KeyFile) -> dict[str, dict[str, str]]:
    """prod with its identity on this host, offline (escrow, kept in a safe) without."""
    return {
        "prod": {"recipient": prod.recipient, "identity": prod.reference},
        "offline": {"recipient": offline.recipient},
    }


def target(sqlite_source: Path, **values: Any) -> dict[str, Any]:
    return {"engine": "sqlite", "database": sqlite_source, "storages": ["local"], **values}


def schedule(**values: Any) -> dict[str, Any]:
    return {"target": "app-db", "cron": "0 3 * * *", **values}


def errors_of(path: Path, *, probe: bool = True) -> list[str]:
    with pytest.raises(config.ConfigInvalid) as caught:
        config.apply(config.load(path), probe=probe)
    return caught.value.errors


@pytest.fixture
def encrypted(toml_config: Callable[..., Path], keys, sqlite_source: Path) -> Callable[..., Path]:
    """``encrypted(target={...}, schedule={...}, keys={...})``: the file with keys prod and
    offline, target app-db and schedule nightly, each table updated with the given values."""

    def write(**changes: dict[str, Any]) -> Path:
        return toml_config(
            keys={name: {**table, **changes.get(name, {})} for name, table in keys.items()},
            targets={"app-db": target(sqlite_source, **changes.get("target", {}))},
            schedules={"nightly": schedule(**changes.get("schedule", {}))},
        )

    return write


def test_it_applies_keys_and_the_keys_of_targets_and_schedules_idempotently(encrypted, prod, offline):
    path = encrypted(target={"encryption": "prod", "escrow": ["offline"]}, schedule={"escrow": ["prod"]})
    first = config.apply(config.load(path))
    assert first.created == ["key prod", "key offline", "storage local", "target app-db", "schedule nightly"]
    key = EncryptionKey.objects.get(name="prod")
    assert (key.recipient, key.identity) == (prod.recipient, prod.reference)
    assert EncryptionKey.objects.get(name="offline").identity == ""
    app_db = Target.objects.get(name="app-db")
    assert (app_db.encryption, app_db.escrow) == ("prod", ["offline"])
    nightly = BackupSchedule.objects.get(name="nightly")
    assert (nightly.encryption, nightly.escrow) == ("", ["prod"])  # "": the target's key
    second = config.apply(config.load(path))
    assert second.created == [] and second.updated == []
    assert "key prod" in second.unchanged and "key offline" in second.unchanged


def test_it_lets_a_schedule_name_its_own_key(encrypted, offline):
    path = encrypted(
        offline={"identity": offline.reference},
        target={"encryption": "prod"},
        schedule={"encryption": "offline"},
    )
    config.apply(config.load(path))
    assert BackupSchedule.objects.get(name="nightly").encryption == "offline"


def test_it_leaves_keys_the_file_does_not_name_alone(encrypted, key_dir):
    other = KeyFile(key_dir, "other")
    services.register_key("other", other.recipient, other.reference)
    config.apply(config.load(encrypted()))
    assert set(EncryptionKey.objects.values_list("name", flat=True)) == {"prod", "offline", "other"}


def test_it_lets_a_target_name_a_key_of_the_catalog(toml_config, key_dir, sqlite_source):
    other = KeyFile(key_dir, "other")
    services.register_key("other", other.recipient, other.reference)
    config.apply(config.load(toml_config(targets={"app-db": target(sqlite_source, encryption="other")})))
    assert Target.objects.get(name="app-db").encryption == "other"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"target": {"encryption": "prdo"}},
         "targets.app-db.encryption: no key named 'prdo' (did you mean 'prod'?); declare it as [keys.prdo]"),
        ({"target": {"encryption": "prod", "escrow": ["ofline"]}},
         "targets.app-db.escrow: no key named 'ofline' (did you mean 'offline'?)"),
        ({"target": {"escrow": ["offline"]}},
         "targets.app-db.escrow: escrow keys need an encryption key: set encryption as well"),
        ({"target": {"encryption": "none"}},
         'targets.app-db.encryption: "none" names no key: leave encryption out'),
        ({"target": {"encryption": ["prod"]}}, "targets.app-db.encryption: must be a string, got list"),
        ({"target": {"escrow": "offline"}}, "targets.app-db.escrow: must be a list of strings"),
        ({"schedule": {"encryption": "prodd"}},
         "schedules.nightly.encryption: no key named 'prodd' (did you mean 'prod'?)"),
        ({"schedule": {"escrow": ["offline"]}},
         "schedules.nightly.escrow: escrow keys need an encryption key: set encryption as well"),
        ({"prod": {"recipient": "age1nope"}},
         "keys.prod.recipient: not an age X25519 recipient (age1...): 'age1nope'; age-keygen -y KEYFILE"),
        ({"prod": {"recipient": ""}}, "keys.prod.recipient: required: the key's public key, age1..."),
        ({"prod": {"retired": True}}, "keys.prod.retired: unknown key"),
        ({"prod": {"identity": "/run/secrets/prod.key"}},
         "keys.prod.identity: write where this host finds the key file, as ${file:/run/secrets/KEY.key}"),
        ({"prod": {"identity": "${file:/etc/prod.key}"}}, "keys.prod.identity: ${file:/etc/prod.key} is outside"),
    ],
)  # fmt: skip
def test_it_rejects_bad_keys_and_key_names_under_their_key_path(encrypted, changes, expected):
    errors = errors_of(encrypted(**changes))
    assert any(error.startswith(expected) for error in errors), errors
    assert not EncryptionKey.objects.exists() and not Target.objects.exists()


def test_it_refuses_a_key_named_none(toml_config, offline):
    errors = errors_of(toml_config(keys={"none": {"recipient": offline.recipient}}))
    assert errors == ['keys.none: invalid name: "none" means no key on a schedule; choose another name']


def test_it_refuses_one_recipient_under_two_names(toml_config, prod, key_dir):
    services.register_key("old-name", KeyFile(key_dir, "old").recipient)
    old = EncryptionKey.objects.get(name="old-name")
    errors = errors_of(
        toml_config(
            keys={
                "prod": {"recipient": prod.recipient},
                "prod-again": {"recipient": prod.recipient},
                "renamed": {"recipient": old.recipient},
            }
        )
    )
    assert errors == [
        "keys.prod-again.recipient: the recipient of keys.prod too; a key has one name",
        "keys.renamed.recipient: key 'old-name' in the catalog has this recipient; a key has one name",
    ]


def test_it_refuses_a_retired_key_as_encryption_or_escrow(encrypted, key_dir):
    old = KeyFile(key_dir, "old")
    services.register_key("old", old.recipient, old.reference)
    EncryptionKey.objects.filter(name="old").update(retired_at=timezone.now())
    errors = errors_of(encrypted(target={"encryption": "old", "escrow": ["old"]}))
    assert errors == [
        "targets.app-db.encryption: key 'old' is retired; name an active key",
        "targets.app-db.escrow: key 'old' is retired; name an active key",
    ]


def test_it_refuses_an_identity_written_into_the_file_without_repeating_it(encrypted, prod, offline, capsys):
    path = encrypted(
        prod={"identity": prod.secret},
        offline={"recipient": offline.secret},  # the wrong half of the key pair
        target={"password": prod.secret.lower()},
    )
    with pytest.raises(CommandError) as caught:
        call_command("backup_config", "check", str(path))
    output = str(caught.value) + "".join(capsys.readouterr())
    assert "keys.prod.identity: holds an age identity (AGE-SECRET-KEY-...)" in output
    assert "keys.offline.recipient: holds an age identity" in output
    assert "targets.app-db.password: holds an age identity" in output
    for secret in (prod.secret, offline.secret):
        assert secret[len("AGE-SECRET-KEY-") :] not in output.upper()


def test_it_refuses_an_identity_as_a_table_name_without_repeating_it(toml_config, prod):
    errors = errors_of(toml_config(keys={prod.secret: {"recipient": prod.recipient}}))
    assert errors == [
        "keys: a key name holds an age identity (AGE-SECRET-KEY-...), a secret that is never written "
        'here: give its key file as identity = "${file:/run/secrets/KEY.key}" under [keys.NAME]'
    ]


def test_it_refuses_the_identity_of_another_key_when_probing(encrypted, prod, offline, key_dir):
    wrong = encrypted(prod={"identity": f"${{file:{key_dir / 'offline.key'}}}"})
    errors = errors_of(wrong)
    assert len(errors) == 1
    assert errors[0].startswith(
        f"keys.prod.identity: the file holds the identity of another key ({offline.recipient})"
    )
    assert offline.secret not in errors[0]
    config.apply(config.load(wrong), probe=False)  # a fact about this host: only a probe finds it


def test_it_refuses_an_identity_that_does_not_resolve_when_probing(encrypted, key_dir):
    (key_dir / "not-a-key").write_text("hello\n")
    missing = errors_of(encrypted(prod={"identity": f"${{file:{key_dir / 'gone.key'}}}"}))
    assert missing == [f"keys.prod.identity: secret file {key_dir / 'gone.key'} does not exist"]
    garbage = errors_of(encrypted(prod={"identity": f"${{file:{key_dir / 'not-a-key'}}}"}))
    assert garbage == [
        "keys.prod.identity: not an age X25519 identity: expected one line AGE-SECRET-KEY-1... "
        "(age-keygen's key file)"
    ]


def test_it_allows_a_new_identity_reference_for_a_key(encrypted, prod, key_dir, monkeypatch):
    config.apply(config.load(encrypted(target={"encryption": "prod"})))
    monkeypatch.setenv("PROD_AGE_KEY", prod.path.read_text())
    report = config.apply(
        config.load(encrypted(prod={"identity": "${PROD_AGE_KEY}"}, target={"encryption": "prod"}))
    )
    assert report.updated == ["key prod (identity)"]
    assert EncryptionKey.objects.get(name="prod").identity == "${PROD_AGE_KEY}"


def test_it_refuses_a_new_recipient_for_a_key_backups_are_encrypted_to(
    encrypted, prod, sqlite_source, key_dir
):
    config.apply(config.load(encrypted(target={"encryption": "prod"})))
    replacement = KeyFile(key_dir, "replacement")
    changed = encrypted(
        prod={"recipient": replacement.recipient, "identity": replacement.reference},
        target={"encryption": "prod"},
    )
    config.apply(config.load(changed))  # no backup was encrypted to it yet: allowed
    assert EncryptionKey.objects.get(name="prod").recipient == replacement.recipient
    backup = services.run_backup(Target.objects.get(name="app-db"))
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    key = EncryptionKey.objects.get(name="prod")
    errors = errors_of(encrypted(target={"encryption": "prod"}))
    assert errors == [
        f"keys.prod.recipient: 1 backup(s) are encrypted to key prod (id {key.fingerprint}, "
        f"{replacement.recipient}) and a key is its recipient: give the new key a new name "
        "([keys.prod-2]) and point the targets at it; keep [keys.prod] as it was, the old backups "
        "need its identity"
    ]


def test_it_refuses_a_new_recipient_for_a_key_backups_list_as_escrow(encrypted, prod, offline, key_dir):
    config.apply(config.load(encrypted(target={"encryption": "prod", "escrow": ["offline"]})))
    backup = services.run_backup(Target.objects.get(name="app-db"))
    assert Backup.objects.get(pk=backup.pk).encryption_recipients == [prod.recipient, offline.recipient]
    errors = errors_of(encrypted(offline={"recipient": KeyFile(key_dir, "new").recipient}))
    assert len(errors) == 1 and errors[0].startswith(
        "keys.offline.recipient: 1 backup(s) are encrypted to key offline"
    )


def test_it_reads_a_schedules_legacy_none_as_the_targets_nothing(encrypted):
    config.apply(config.load(encrypted(schedule={"encryption": "none"})))
    assert BackupSchedule.objects.get(name="nightly").encryption == ""


def test_it_refuses_a_schedules_legacy_none_when_its_target_encrypts(encrypted):
    errors = errors_of(encrypted(target={"encryption": "prod"}, schedule={"encryption": "none"}))
    assert errors == [
        'schedules.nightly.encryption: "none", but target app-db encrypts to key prod; remove the line '
        "(the schedule uses the target's key) or name another key"
    ]


def test_it_refuses_legacy_none_for_a_target_of_the_catalog_that_encrypts(encrypted, toml_config, keys):
    config.apply(config.load(encrypted(target={"encryption": "prod"})))
    errors = errors_of(toml_config("schedules.toml", schedules={"weekly": schedule(encryption="none")}))
    assert errors == [
        'schedules.weekly.encryption: "none", but target app-db encrypts to key prod; remove the line '
        "(the schedule uses the target's key) or name another key"
    ]


RESTORES_HERE = (
    "required: this host restores (BACKUPSITE_RESTORES_HERE) and {users} to it; give its key file as "
    "${{file:...}}, or set BACKUPSITE_RESTORES_HERE=false on a backup-only host"
)


def test_it_requires_the_identity_of_each_key_encrypted_to_on_a_host_that_restores(encrypted):
    errors = errors_of(encrypted(target={"encryption": "offline", "escrow": ["prod"]}))
    assert errors == [f"keys.offline.identity: {RESTORES_HERE.format(users='targets.app-db encrypts')}"]
    errors = errors_of(encrypted(target={"encryption": "prod"}, schedule={"encryption": "offline"}))
    assert errors == [f"keys.offline.identity: {RESTORES_HERE.format(users='schedules.nightly encrypts')}"]


def test_it_requires_the_identity_a_catalog_target_needs_when_the_file_drops_it(encrypted, toml_config, keys):
    config.apply(config.load(encrypted(target={"encryption": "prod"})))
    dropped = toml_config("keys.toml", keys={"prod": {"recipient": keys["prod"]["recipient"]}})
    users = "target app-db (in the catalog) encrypts"
    assert errors_of(dropped) == [f"keys.prod.identity: {RESTORES_HERE.format(users=users)}"]


def test_it_backs_up_encrypted_to_a_key_without_identity_on_a_backup_only_host(encrypted, settings, offline):
    settings.BACKUPSITE_RESTORES_HERE = False
    config.apply(config.load(encrypted(target={"encryption": "offline"})))
    backup = services.run_backup(Target.objects.get(name="app-db"))
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    key = EncryptionKey.objects.get(name="offline")
    assert (backup.encryption, backup.encryption_key_id) == ("age", key.fingerprint)
    assert backup.encryption_recipients == [offline.recipient]
