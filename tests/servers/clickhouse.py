"""A throwaway ClickHouse server (Debian's ``clickhouse-server`` 18.16) on free loopback ports.

Its config.xml and users.xml are generated into one temp directory that also holds the data,
the logs and a throwaway TLS certificate (``tcp_port_secure``); nothing of ``/etc`` is read.
ClickHouse 18.16 runs as any user, root included, so it runs as the user of the suite. The test
user's password (stored as ``password_sha256_hex``) holds every character XML must escape; the
``default`` user gets a random password so nothing on the server is open.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from . import free_port, stop_process, wait_for

USER = "backupsite"
# Spaces at both ends, XML's five special characters, a backslash, a '#' and non-ASCII.
PASSWORD = " Cl1ck<&>\"' hoüse #\\ "


def server_binary() -> str | None:
    # /usr/sbin is often missing from the PATH of users other than root.
    return shutil.which("clickhouse-server") or (
        "/usr/sbin/clickhouse-server" if os.path.exists("/usr/sbin/clickhouse-server") else None
    )


def _users_xml(user: str, password: str) -> str:
    def entry(name: str, secret: str) -> str:
        digest = hashlib.sha256(secret.encode()).hexdigest()
        return (
            f"<{name}><password_sha256_hex>{digest}</password_sha256_hex>"
            "<networks><ip>127.0.0.1</ip><ip>::1</ip></networks>"
            f"<profile>default</profile><quota>default</quota></{name}>"
        )

    return (
        '<?xml version="1.0"?>\n<yandex>\n'
        "  <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>\n"
        f"  <users>{entry(user, password)}{entry('default', secrets.token_hex(16))}</users>\n"
        "  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>"
        "<result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>"
        "</interval></default></quotas>\n</yandex>\n"
    )


@dataclass
class ClickHouseServer:
    base: Path
    port: int
    http_port: int
    secure_port: int
    host: str = "127.0.0.1"
    user: str = USER
    password: str = PASSWORD
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def tls_ca(self) -> Path:
        return self.base / "tls" / "ca.pem"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    def _config_xml(self) -> str:
        base, tls = self.base, self.base / "tls"
        return f"""<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{base}/server.log</log><errorlog>{base}/server.err.log</errorlog>
    <size>10M</size><count>1</count></logger>
  <listen_host>{self.host}</listen_host>
  <tcp_port>{self.port}</tcp_port>
  <http_port>{self.http_port}</http_port>
  <tcp_port_secure>{self.secure_port}</tcp_port_secure>
  <openSSL><server><certificateFile>{tls}/server.pem</certificateFile><privateKeyFile>{tls}/server.key</privateKeyFile>
    <verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile></server></openSSL>
  <path>{base}/data/</path>
  <tmp_path>{base}/tmp/</tmp_path>
  <user_files_path>{base}/user_files/</user_files_path>
  <format_schema_path>{base}/format_schemas/</format_schema_path>
  <users_config>{base}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
  <timezone>UTC</timezone>
</yandex>
"""

    def start(self) -> None:
        from .mariadb import make_certificates  # the same throwaway CA helper

        make_certificates(self.base / "tls")
        (self.base / "config.xml").write_text(self._config_xml())
        (self.base / "users.xml").write_text(_users_xml(self.user, self.password))
        (self.base / "client.xml").write_text(
            f"<config><user>{escape(self.user)}</user><password>{escape(self.password)}</password></config>\n"
        )
        (self.base / "client.xml").chmod(0o600)
        binary = server_binary()
        assert binary is not None
        self.process = subprocess.Popen(
            [binary, f"--config-file={self.base / 'config.xml'}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.base,
            start_new_session=True,
        )
        wait_for(self._ready, f"clickhouse-server on port {self.port} (log: {self.log_file})", timeout=60)

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"clickhouse-server exited with status {self.process.returncode}:\n{self.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/ping", timeout=2) as response:
                return bool(response.read().startswith(b"Ok"))
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=30)  # SIGTERM: a clean shutdown
        shutil.rmtree(self.base, ignore_errors=True)

    def client(self, *args: str, database: str | None = None) -> list[str]:
        argv = [
            "clickhouse-client",
            f"--config-file={self.base / 'client.xml'}",
            f"--host={self.host}",
            f"--port={self.port}",
        ]
        if database is not None:
            argv.append(f"--database={database}")
        return [*argv, *args]

    def query(self, sql: str, database: str | None = None) -> str:
        """Run statements (``;``-separated, through stdin) and return the TSV output."""
        result = subprocess.run(
            self.client("--multiquery", "--allow_experimental_low_cardinality_type=1", database=database),
            input=sql.encode(),
            capture_output=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"clickhouse-client failed: {result.stderr.decode(errors='replace')}")
        return result.stdout.decode("utf-8", "surrogateescape")

    def create_database(self, name: str) -> str:
        self.query(f"CREATE DATABASE `{name}`")
        return name

    def drop_database(self, name: str) -> None:
        self.query(f"DROP DATABASE IF EXISTS `{name}`")

    def database_exists(self, name: str) -> bool:
        return self.query(f"SELECT count() FROM system.databases WHERE name = '{name}'").strip() == "1"

    def tables(self, database: str) -> dict[str, str]:
        """name -> engine, like the engine sees them."""
        output = self.query(
            f"SELECT name, engine FROM system.tables WHERE database = '{database}' ORDER BY name"
        )
        return dict(line.split("\t") for line in output.splitlines())

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def running_clickhouse() -> Iterator[ClickHouseServer]:
    base = Path(tempfile.mkdtemp(prefix="backupsite-clickhouse-"))
    server = ClickHouseServer(base=base, port=free_port(), http_port=free_port(), secure_port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
