"""Where secret references may point: files only inside the secret directories (regular, at most
64 KiB, never blocking), never the application's own variables, only allowed names when an
allow-list is set; refused when saved (admin, TOML) and when resolved, each refusal naming the
field, the rule and the fix, never a value. And the demo leaves live sessions out of its backups."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import threading
import uuid
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from backups import services
from backups.config import loader as config
from backups.demo import DEMO_CONFIG
from backups.models import BackupStatus, Notifier, Storage, Target
from backups.secrets import APP_SECRETS, MAX_FILE_BYTES, SecretError, refusals, resolve, resolve_values

pytestmark = pytest.mark.django_db


def unique_secret() -> str:
    return f"s3cr3t-{uuid.uuid4().hex}"


@pytest.fixture
def secrets_dir(tmp_path: Path, settings) -> Path:
    """The only secret directory for the test (the test settings also allow the temp dir)."""
    directory = tmp_path / "secrets"
    directory.mkdir()
    settings.BACKUPSITE_SECRETS_DIRS = [str(directory)]
    return directory


def resolve_within(value: str, seconds: float = 5) -> str | BaseException:
    """``resolve(value)`` in a thread: the result or the exception, failing the test if it blocks."""
    outcome: list[str | BaseException] = []

    def run() -> None:
        try:
            outcome.append(resolve(value))
        except BaseException as exc:  # handed back to the test
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"resolving {value} blocked for {seconds} s"
    return outcome[0]


# -- ${file:...} ------------------------------------------------------------------------------------


def test_it_reads_a_file_inside_a_secret_directory(secrets_dir: Path) -> None:
    secret = unique_secret()
    (secrets_dir / "db").write_text(secret + "\n")
    assert resolve(f"${{file:{secrets_dir}/db}}") == secret


def test_it_refuses_a_file_outside_the_secret_directories(secrets_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.pass"
    outside.write_text(unique_secret())
    with pytest.raises(SecretError) as caught:
        resolve(f"${{file:{outside}}}", field="password")
    assert str(caught.value) == (
        f"password: ${{file:{outside}}} is outside the secret directories ({secrets_dir}); "
        "put the file in one of them or set BACKUPSITE_SECRETS_DIRS"
    )


def test_it_refuses_dot_dot_out_of_a_secret_directory(secrets_dir: Path, tmp_path: Path) -> None:
    secret = unique_secret()
    (tmp_path / "outside.pass").write_text(secret)
    value = f"${{file:{secrets_dir}/../outside.pass}}"
    assert refusals(value) == [
        f"{value} is outside the secret directories ({secrets_dir}); "
        "put the file in one of them or set BACKUPSITE_SECRETS_DIRS"
    ]
    with pytest.raises(SecretError, match="is outside the secret directories") as caught:
        resolve(value)
    assert secret not in str(caught.value)


def test_it_refuses_a_symlink_out_of_a_secret_directory(secrets_dir: Path, tmp_path: Path) -> None:
    secret = unique_secret()
    (tmp_path / "outside.pass").write_text(secret)
    (secrets_dir / "link").symlink_to(tmp_path / "outside.pass")
    with pytest.raises(SecretError) as caught:
        resolve(f"${{file:{secrets_dir}/link}}")
    message = str(caught.value)
    assert f"(which resolves to {tmp_path / 'outside.pass'}) is outside the secret directories" in message
    assert secret not in message


def test_it_follows_a_symlink_that_stays_inside(secrets_dir: Path) -> None:
    secret = unique_secret()
    (secrets_dir / "real").write_text(secret)
    (secrets_dir / "alias").symlink_to(secrets_dir / "real")
    assert resolve(f"${{file:{secrets_dir}/alias}}") == secret


def test_it_refuses_a_relative_path(secrets_dir: Path) -> None:
    assert refusals("${file:db.pass}") == [
        "${file:db.pass} is not an absolute path; write the full path of a file in one of the "
        f"secret directories ({secrets_dir})"
    ]


def test_it_refuses_a_fifo_without_blocking(secrets_dir: Path) -> None:
    fifo = secrets_dir / "pipe"
    os.mkfifo(fifo)
    outcome = resolve_within(f"${{file:{fifo}}}")
    assert isinstance(outcome, SecretError)
    assert str(outcome) == (
        f"secret file {fifo} is a FIFO, not a regular file; point the reference at a file that holds only the secret"
    )


def test_it_refuses_a_directory(secrets_dir: Path) -> None:
    (secrets_dir / "sub").mkdir()
    with pytest.raises(SecretError, match="is a directory, not a regular file"):
        resolve(f"${{file:{secrets_dir}/sub}}")


def test_it_refuses_dev_zero_outside_the_directories_and_as_a_device_inside(settings, secrets_dir) -> None:
    assert "is outside the secret directories" in refusals("${file:/dev/zero}")[0]
    settings.BACKUPSITE_SECRETS_DIRS = ["/dev"]
    outcome = resolve_within("${file:/dev/zero}")
    assert isinstance(outcome, SecretError)
    assert "secret file /dev/zero is a device, not a regular file" in str(outcome)


def test_it_reads_at_most_64_kib(secrets_dir: Path) -> None:
    (secrets_dir / "full").write_text("x" * MAX_FILE_BYTES)
    assert len(resolve(f"${{file:{secrets_dir}/full}}")) == MAX_FILE_BYTES
    (secrets_dir / "big").write_text("x" * (MAX_FILE_BYTES + 1))
    with pytest.raises(SecretError) as caught:
        resolve(f"${{file:{secrets_dir}/big}}")
    assert str(caught.value) == (
        f"secret file {secrets_dir}/big is larger than 64 KiB; a secret file holds only the secret"
    )


# -- ${ENV} ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", [*(name for name in APP_SECRETS if "*" not in name), "DJANGO_SUPERUSER_PASSWORD"]
)
def test_it_never_resolves_the_applications_own_secrets(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = unique_secret()
    monkeypatch.setenv(name, secret)
    with pytest.raises(SecretError) as caught:
        resolve_values({"url": f"${{{name}}}"})
    message = str(caught.value)
    assert message == (
        f"url: ${{{name}}} is one of Backupsite's own secrets, which references never read; "
        "put the value in a variable of its own"
    )
    assert secret not in message


def test_it_resolves_only_names_the_allow_list_matches(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.BACKUPSITE_SECRET_ENV = ["APP_*", "S3_?EY"]
    monkeypatch.setenv("APP_DB_PASSWORD", "app-password")
    monkeypatch.setenv("S3_KEY", "s3-key")
    monkeypatch.setenv("HOME_TOKEN", "home-token")
    assert resolve("${APP_DB_PASSWORD}/${S3_KEY}") == "app-password/s3-key"
    assert refusals("${HOME_TOKEN}") == [
        "${HOME_TOKEN} matches none of the BACKUPSITE_SECRET_ENV patterns (APP_*, S3_?EY); "
        "use a variable that matches one or add a pattern"
    ]
    with pytest.raises(SecretError, match="matches none of the BACKUPSITE_SECRET_ENV patterns"):
        resolve("${HOME_TOKEN}")


def test_it_refuses_the_applications_own_secrets_even_when_allowed(settings) -> None:
    settings.BACKUPSITE_SECRET_ENV = ["*"]
    assert "own secrets" in refusals("${SECRET_KEY}")[0]


# -- refused when saved: the admin ------------------------------------------------------------------


def target_form(target: Target, **values: str) -> dict[str, object]:
    """What the change form posts for ``target`` as it is, with ``values`` typed in."""
    form: dict[str, object] = {
        "name": target.name, "engine": target.engine, "is_active": "on", "compression": target.compression,
        "host": target.host, "port": target.port or "", "database": target.database, "user": target.user,
        "password": target.password, "timezone": target.timezone, "options": json.dumps(target.options),
        "sandbox": "", "storages": [storage.pk for storage in target.storages.all()],
        "paths": "\n".join(target.paths), "config_paths": "\n".join(target.config_paths),
        "include_tables": "\n".join(target.include_tables), "exclude_tables": "\n".join(target.exclude_tables),
    }  # fmt: skip
    return {**form, **values}


def test_it_refuses_a_file_outside_the_directories_in_the_target_form(
    admin_client, sqlite_target, secrets_dir
):
    url = f"/admin/backups/target/{sqlite_target.pk}/change/"
    response = admin_client.post(url, target_form(sqlite_target, password="${file:/etc/shadow}"))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["password"] == [
        f"${{file:/etc/shadow}} is outside the secret directories ({secrets_dir}); "
        "put the file in one of them or set BACKUPSITE_SECRETS_DIRS"
    ]
    assert Target.objects.get(pk=sqlite_target.pk).password == ""


MONGODB_FORM = {
    "name": "orders", "engine": "mongodb", "is_active": "on", "compression": "gzip", "timezone": "UTC",
    "host": "mongo.internal", "port": "27017", "user": "backup", "password": "${ORDERS_MONGODB_PASSWORD}",
}  # fmt: skip


def test_it_refuses_a_plaintext_secret_engine_option_in_the_target_form(admin_client):
    options = {
        "tls_certificate_key_file": "/etc/ssl/client.pem",
        "tls_certificate_key_file_password": "hunter2",
    }
    response = admin_client.post(
        "/admin/backups/target/add/", {**MONGODB_FORM, "options": json.dumps(options)}
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["options"] == [
        "options.tls_certificate_key_file_password: write secrets as ${ENV_VAR} or ${file:/path}; "
        "plaintext secrets are refused"
    ]
    assert not Target.objects.filter(name="orders").exists()
    options["tls_certificate_key_file_password"] = "${ORDERS_KEY_PASSWORD}"
    response = admin_client.post(
        "/admin/backups/target/add/", {**MONGODB_FORM, "options": json.dumps(options)}
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Target.objects.get(name="orders").options == options


def test_it_refuses_the_applications_secrets_in_the_target_options(admin_client):
    options = {"tls_certificate_key_file_password": "${DJANGO_SECRET_KEY}"}
    response = admin_client.post(
        "/admin/backups/target/add/", {**MONGODB_FORM, "options": json.dumps(options)}
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["options"] == [
        "options.tls_certificate_key_file_password: ${DJANGO_SECRET_KEY} is one of Backupsite's own "
        "secrets, which references never read; put the value in a variable of its own"
    ]
    assert not Target.objects.filter(name="orders").exists()


def test_it_checks_target_options_with_the_engines_own_rules(admin_client):
    options = json.dumps({"connect_timeout": "soon", "colour": "blue"})
    response = admin_client.post("/admin/backups/target/add/", {**MONGODB_FORM, "options": options})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["options"]
    assert any(error.startswith("options: unknown option 'colour'; known options: ") for error in errors)
    assert any(
        error.startswith("options.connect_timeout: must be a whole number of seconds") for error in errors
    )
    assert not Target.objects.filter(name="orders").exists()


def test_it_refuses_a_refused_reference_in_the_storage_and_notifier_forms(admin_client, secrets_dir):
    storage = {"name": "s3", "kind": "s3", "prefix": "", "required": "on"}
    options = {"bucket": "b", "secret_key": "${file:/etc/shadow}"}
    response = admin_client.post("/admin/backups/storage/add/", {**storage, "options": json.dumps(options)})
    assert response.status_code == 200
    assert "secret_key: ${file:/etc/shadow} is outside the secret directories" in " ".join(
        response.context["adminform"].form.errors["options"]
    )
    assert not Storage.objects.filter(name="s3").exists()
    notifier = {"name": "hook", "kind": "webhook", "events": json.dumps(["backup_failed"]), "is_active": "on"}
    response = admin_client.post(
        "/admin/backups/notifier/add/", {**notifier, "options": json.dumps({"url": "${CELERY_BROKER_URL}"})}
    )
    assert response.status_code == 200
    assert "url: ${CELERY_BROKER_URL} is one of Backupsite's own secrets" in " ".join(
        response.context["adminform"].form.errors["options"]
    )
    assert not Notifier.objects.filter(name="hook").exists()


# -- refused when saved: the TOML file ---------------------------------------------------------------


def check_errors(path: Path, *args: str) -> str:
    with pytest.raises(CommandError) as caught:
        call_command("backup_config", "check", str(path), *args)
    return str(caught.value)


def test_it_refuses_references_out_of_bounds_in_backup_config_check(
    toml_config, sqlite_source, secrets_dir, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SECRET_KEY", unique_secret())
    path = toml_config(
        targets={
            "app-db": {
                "engine": "sqlite",
                "database": sqlite_source,
                "password": "${file:/etc/shadow}",
                "storages": ["local"],
            }
        },
        notifiers={"hook": {"kind": "webhook", "url": "${SECRET_KEY}"}},
    )
    for args in ((), ("--skip-probes",)):
        message = check_errors(path, *args)
        assert (
            "targets.app-db.password: ${file:/etc/shadow} is outside the secret directories "
            f"({secrets_dir}); put the file in one of them or set BACKUPSITE_SECRETS_DIRS"
        ) in message
        assert "notifiers.hook.url: ${SECRET_KEY} is one of Backupsite's own secrets" in message
        assert os.environ["SECRET_KEY"] not in message
    with pytest.raises(CommandError):
        call_command("backup_config", "apply", str(path))
    assert not Target.objects.exists() and not Notifier.objects.exists() and not Storage.objects.exists()


def test_it_refuses_a_plaintext_secret_engine_option_in_toml(toml_config):
    path = toml_config(
        targets={
            "orders": {
                "engine": "mongodb",
                "host": "mongo.internal",
                "user": "backup",
                "password": "${ORDERS_MONGODB_PASSWORD}",
                "storages": ["local"],
                "options": {
                    "tls_certificate_key_file": "/etc/ssl/client.pem",
                    "tls_certificate_key_file_password": "hunter2",
                },
            }
        }
    )
    message = check_errors(path, "--skip-probes")
    assert (
        "targets.orders.options.tls_certificate_key_file_password: write secrets as ${ENV_VAR} or "
        "${file:/path}; plaintext secrets are refused"
    ) in message
    assert "hunter2" not in message
    assert not Target.objects.exists()


def test_it_reads_an_allowed_file_reference_when_probing(toml_config, sqlite_source, secrets_dir):
    (secrets_dir / "app-db").write_text(unique_secret())
    path = toml_config(
        targets={
            "app-db": {
                "engine": "sqlite",
                "database": sqlite_source,
                "password": f"${{file:{secrets_dir}/app-db}}",
                "storages": ["local"],
            }
        }
    )
    call_command("backup_config", "apply", str(path))
    assert Target.objects.get(name="app-db").password == f"${{file:{secrets_dir}/app-db}}"


# -- refused when resolved: a run -------------------------------------------------------------------


def test_it_fails_a_run_whose_stored_reference_is_refused(sqlite_target, secrets_dir):
    Target.objects.filter(pk=sqlite_target.pk).update(password="${file:/etc/shadow}")
    backup = services.run_backup(Target.objects.get(pk=sqlite_target.pk))
    assert backup.status == BackupStatus.FAILED
    assert backup.error_message == (
        f"target app-db: password: ${{file:/etc/shadow}} is outside the secret directories ({secrets_dir}); "
        "put the file in one of them or set BACKUPSITE_SECRETS_DIRS"
    )


# -- the demo -----------------------------------------------------------------------------------------


def test_it_leaves_live_sessions_out_of_the_demos_backup_of_its_own_catalog(toml_config, tmp_path):
    catalog = tmp_path / "catalog.sqlite3"
    with sqlite3.connect(catalog) as db:
        db.execute("CREATE TABLE django_session (session_key TEXT PRIMARY KEY, session_data TEXT)")
        db.execute("INSERT INTO django_session VALUES ('k3y', 'logged-in-admin')")
        db.execute("CREATE TABLE backups_target (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO backups_target VALUES (1, 'app-db')")
    db.close()
    demo_target = config.load(DEMO_CONFIG).data["targets"]["backupsite-db"]
    path = toml_config(targets={"backupsite-db": {**demo_target, "database": catalog, "storages": ["local"]}})
    config.apply(config.load(path))
    backup = services.run_backup(Target.objects.get(name="backupsite-db"))
    assert backup.status == BackupStatus.SUCCESS, backup.error_message
    copy = tmp_path / "copy.sqlite3"
    copy.write_bytes(gzip.decompress((tmp_path / "backups" / backup.file_path).read_bytes()))
    with sqlite3.connect(copy) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert tables == {"backups_target"}
    assert backup.tables_included == ["backups_target"]
