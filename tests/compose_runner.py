"""docker/compose.yaml's services run outside containers: the same commands and environment,
translated only where a container would differ (there is no container engine on these machines).

The runner reads compose.yaml (interpolating ``${NAME:-default}`` as compose does, from the
variables it is given) and the final stage of docker/Dockerfile (its ENV and WORKDIR), then runs
each app service's command in a session of its own with:

- the image's environment, then the service's ``environment``, and nothing of the test's own
  (pytest-django's DJANGO_SETTINGS_MODULE must not leak in);
- container paths mapped to host paths: the image's /opt/venv to this venv (so ``python``,
  ``celery`` and ``gunicorn`` on PATH are the venv's) and its WORKDIR to the repository; named
  volumes and bind mounts to temp paths; ``/run/secrets/NAME`` to the secret files given;
- service host names and ports (``postgres:5432``, ``redis:6379``) to the suite's real servers,
  and the published port (``0.0.0.0:8000``) to a free loopback port;
- ``HOSTNAME`` set as a container sets it (the healthchecks name ``worker@$HOSTNAME``).

Services with an ``image`` and no ``build`` (postgres, redis) are the suite's servers.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO

COMPOSE_FILE = REPO / "docker" / "compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
#: What the base image (python:3.11-slim-bookworm) sets that the Dockerfile builds on.
BASE_IMAGE_ENV = {"LANG": "C.UTF-8"}

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


class ComposeError(Exception):
    """compose.yaml uses something this runner (or compose) cannot take."""


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """``text`` with compose's interpolation: ``$$`` is a literal ``$``; ``${NAME}``/``$NAME``;
    ``${NAME:-default}`` (unset or empty) and ``${NAME-default}`` (unset); ``${NAME:?message}``
    and ``${NAME?message}`` raise; ``${NAME:+alternative}`` and ``${NAME+alternative}``."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["plain"]
        value = variables.get(name)
        op, arg = match["op"], match["arg"] or ""
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if empty else str(value)
        if op in (":?", "?"):
            if empty:
                raise ComposeError(f"${{{name}}}: required variable is missing: {arg}")
            return str(value)
        if op in (":+", "+"):
            return "" if empty else arg
        return value or ""

    if "${" in _VARIABLE.sub("", text):
        raise ComposeError(f"cannot interpolate {text!r}")
    return _VARIABLE.sub(substitute, text)


def _interpolate_tree(node: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, variables)
    if isinstance(node, list):
        return [_interpolate_tree(item, variables) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, variables) for key, value in node.items()}
    return node


def load_compose(variables: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """compose.yaml as compose reads it: YAML merge keys (``<<: *app``) resolved, every value
    interpolated from ``variables`` (the shell's environment and .env, for compose)."""
    loaded = yaml.safe_load(path.read_text())
    return dict(_interpolate_tree(loaded, variables))


@dataclass(frozen=True)
class Image:
    """The final stage of the Dockerfile: its ENV (in order, as written) and WORKDIR."""

    env: dict[str, str]
    workdir: str

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with the ENV lines applied in order; ``$NAME`` expands to the value so far,
        as Docker expands it (``PATH=/opt/venv/bin:$PATH``)."""
        env = dict(base)
        for name, value in self.env.items():
            env[name] = interpolate(value, env)
        return env


def read_image(path: Path = DOCKERFILE) -> Image:
    """ENV and WORKDIR of the Dockerfile's last stage."""
    lines = re.sub(r"\\\n", " ", path.read_text()).splitlines()
    last_from = max(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    env: dict[str, str] = {}
    workdir = "/"
    for line in lines[last_from + 1 :]:
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() == "WORKDIR":
            workdir = rest.strip()
        elif instruction.upper() == "ENV":
            for pair in shlex.split(rest):
                name, equals, value = pair.partition("=")
                if not equals:
                    raise ComposeError(f"ENV {rest!r}: use the NAME=value form")
                env[name] = value
    return Image(env=env, workdir=workdir)


def seconds(text: str | int | float) -> float:
    """A compose duration ("30s", "1m30s", "2m") in seconds."""
    if isinstance(text, int | float):
        return float(text)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", text.strip())
    if not parts or not text.strip():
        raise ComposeError(f"duration {text!r}: expected e.g. 30s or 1m30s")
    hours, minutes, secs = (float(part) if part else 0.0 for part in parts.groups())
    return hours * 3600 + minutes * 60 + secs


@dataclass
class Translation:
    """What a container changes: paths (container prefix -> host path) and addresses
    (``host:port`` as the services see it -> ``127.0.0.1:port`` of the suite's servers)."""

    paths: dict[str, Path] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)

    def __call__(self, text: str) -> str:
        for address, local in self.addresses.items():
            text = re.sub(rf"(?<![\w.-]){re.escape(address)}(?!\d)", local, text)
        for prefix in sorted(self.paths, key=len, reverse=True):
            text = re.sub(rf"(?<![\w./-]){re.escape(prefix)}(?![\w.-])", str(self.paths[prefix]), text)
        return text


@dataclass
class ComposeSite:
    """compose.yaml's app services as processes. ``volumes`` maps named volumes and bind-mount
    sources (as written in compose.yaml, e.g. ``./backupsite.toml``) to host paths; ``secrets``
    maps secret names to host files; ``servers`` maps ``host:port`` to loopback addresses."""

    compose: dict[str, Any]
    image: Image
    volumes: Mapping[str, Path]
    secrets: Mapping[str, Path]
    servers: Mapping[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def service(self, name: str) -> dict[str, Any]:
        try:
            return dict(self.compose["services"][name])
        except KeyError:
            raise ComposeError(f"compose.yaml has no service {name!r}") from None

    def translation(self, name: str) -> Translation:
        paths: dict[str, Path] = {"/opt/venv": Path(sys.prefix), self.image.workdir: REPO}
        for volume in self.service(name).get("volumes", []):
            source, target = str(volume).split(":")[:2]
            if source not in self.volumes:
                raise ComposeError(f"{name}: no host path given for the volume {source!r}")
            paths[target] = self.volumes[source]
        for secret in self.service(name).get("secrets", []):
            if secret not in self.secrets:
                raise ComposeError(f"{name}: no file given for the secret {secret!r}")
            if secret not in self.compose.get("secrets", {}):
                raise ComposeError(f"{name}: the secret {secret!r} is not declared at the top level")
            paths[f"/run/secrets/{secret}"] = self.secrets[secret]
        return Translation(paths=paths, addresses=dict(self.servers))

    def environment(self, name: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The service's environment: the base image's, the Dockerfile's ENV, compose's
        ``environment``, translated; ``extra`` as ``docker compose exec -e`` would add."""
        translate = self.translation(name)
        home = translate.paths.get("/data", self.logs)  # the image user's home is /data
        base = {
            **BASE_IMAGE_ENV,
            "PATH": os.environ["PATH"],  # the base image's tools are this machine's
            "HOSTNAME": socket.gethostname(),
            "HOME": str(home),
        }
        env = {key: translate(value) for key, value in self.image.environment(base).items()}
        given = self.service(name).get("environment", {})
        if isinstance(given, list):
            given = dict(str(item).split("=", 1) for item in given)
        env.update({key: translate(str(value)) for key, value in given.items()})
        env.update(extra or {})
        return env

    def command(self, name: str) -> list[str]:
        command = self.service(name).get("command")
        if not isinstance(command, list):
            raise ComposeError(f"{name}: write the command as a list (exec form)")
        return [self.translation(name)(str(part)) for part in command]

    def dependencies(self, name: str) -> dict[str, str]:
        depends = self.service(name).get("depends_on", {})
        if isinstance(depends, list):
            return dict.fromkeys(depends, "service_started")
        return {dep: spec.get("condition", "service_started") for dep, spec in depends.items()}

    def is_external(self, name: str) -> bool:
        """Run by the suite (postgres, redis): an image of its own, not built from this repo."""
        return "build" not in self.service(name)

    def run(
        self,
        name: str,
        argv: list[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """``docker compose run --rm NAME [argv]`` (or ``exec``): to completion, output kept."""
        argv = [self.translation(name)(part) for part in argv] if argv else self.command(name)
        return subprocess.run(
            argv, cwd=REPO, env=self.environment(name, extra_env), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def start(self, name: str) -> subprocess.Popen[bytes]:
        """Start a long-running service in a session of its own; output to ``logs/NAME.log``."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                self.command(name), cwd=REPO, env=self.environment(name), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.processes[name] = process
        return process

    def healthcheck(self, name: str) -> tuple[bool, str]:
        """Run the service's healthcheck once: (healthy, its output)."""
        check = self.service(name).get("healthcheck", {})
        test = check.get("test")
        if check.get("disable") or not test:
            raise ComposeError(f"{name}: no healthcheck")
        if isinstance(test, str):
            argv = ["sh", "-c", test]
        elif test[0] == "CMD":
            argv = list(test[1:])
        elif test[0] == "CMD-SHELL":
            argv = ["sh", "-c", test[1]]
        else:
            raise ComposeError(f"{name}: healthcheck test {test!r}")
        try:
            result = self.run(name, argv, timeout=seconds(check.get("timeout", "30s")))
        except subprocess.TimeoutExpired:
            return False, "timed out"
        return result.returncode == 0, result.stdout + result.stderr

    def assert_running(self) -> None:
        """Fail at once, with the logs, when a started service has exited (as compose would
        show it "Exited"), rather than let a test wait out its deadline."""
        for name, process in self.processes.items():
            assert process.poll() is None, f"{name} exited {process.returncode}:\n{self.logs_tail()}"

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs_tail(self, lines: int = 30) -> str:
        return "\n".join(
            f"--- {name} ---\n" + "\n".join(self.log(name).splitlines()[-lines:]) for name in self.processes
        )

    def stop_all(self, timeout: float = 30) -> None:
        """SIGTERM every service's process group, then SIGKILL what is left after ``timeout``."""
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@contextlib.contextmanager
def compose_up(site: ComposeSite, services: list[str]) -> Iterator[ComposeSite]:
    """``docker compose up`` of ``services``: each one's dependencies first; a one-shot service
    (one that a ``service_completed_successfully`` condition waits for) runs to completion and
    must exit 0; the others are started, and stopped at the end."""
    one_shot = {
        dependency
        for name in site.compose["services"]
        for dependency, condition in site.dependencies(name).items()
        if condition == "service_completed_successfully"
    }
    done: set[str] = set()

    def bring_up(name: str) -> None:
        if name in done or site.is_external(name):
            return
        for dependency in site.dependencies(name):
            bring_up(dependency)
        if name in one_shot:
            result = site.run(name)
            if result.returncode != 0:
                raise ComposeError(f"{name} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        else:
            site.start(name)
        done.add(name)

    try:
        for name in services:
            bring_up(name)
        yield site
    finally:
        site.stop_all()
