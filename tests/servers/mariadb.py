"""A throwaway MariaDB server (Debian's ``mariadbd``) on a free loopback port.

The data directory, socket, pid file and log live in one temp directory; ``--no-defaults`` keeps
the host's ``/etc/mysql`` out of it. Setup runs as ``root`` over the private socket (unix_socket
authentication for the OS user running the suite); tests connect over TCP as an admin user whose
password needs escaping in a MySQL option file, exactly like production credentials. The server
also offers TLS with a throwaway CA (``tls_ca``), so clients can be made to verify it.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import MySQLdb  # type: ignore[import-untyped]

from . import free_port, stop_process, wait_for

ADMIN_USER = "backupsite"
# A quote of each kind, a backslash, a '#' (comment start) and spaces: option-file escaping.
ADMIN_PASSWORD = 'Ma\'ria "db" \\ #s3cret ü'


@dataclass
class MariaDBServer:
    base: Path
    port: int
    host: str = "127.0.0.1"
    user: str = ADMIN_USER
    password: str = ADMIN_PASSWORD
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket(self) -> Path:
        return self.base / "mariadb.sock"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    @property
    def tls_ca(self) -> Path:
        """The CA that signed the server's certificate (for IP 127.0.0.1 and DNS localhost)."""
        return self.base / "tls" / "ca.pem"

    def _run_as(self) -> list[str]:
        # mariadbd refuses to run as root unless told to; under any other user it just runs.
        return ["--user=root"] if os.geteuid() == 0 else []

    def start(self) -> None:
        tls = make_certificates(self.base / "tls")
        subprocess.run(
            [
                "mariadb-install-db", "--no-defaults", f"--datadir={self.data}", *self._run_as(),
                "--auth-root-authentication-method=socket", f"--auth-root-socket-user={getpass.getuser()}",
                "--skip-test-db", "--skip-name-resolve",
            ],
            check=True, capture_output=True, cwd=self.base,
        )  # fmt: skip
        self.process = subprocess.Popen(
            [
                server_binary(), "--no-defaults", f"--datadir={self.data}", *self._run_as(),
                f"--port={self.port}", f"--bind-address={self.host}", f"--socket={self.socket}",
                f"--pid-file={self.base / 'mariadbd.pid'}", f"--log-error={self.log_file}",
                f"--tmpdir={self.base}", "--skip-log-bin", "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=48M",
                "--innodb-flush-log-at-trx-commit=2", "--innodb-doublewrite=0", "--sync-frm=0",
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
                "--max-connections=100", "--event-scheduler=OFF",
                # Statistics saved in the background would move InnoDB's LSN at random moments.
                "--innodb-stats-persistent=OFF",
                f"--ssl-ca={tls / 'ca.pem'}", f"--ssl-cert={tls / 'server.pem'}", f"--ssl-key={tls / 'server.key'}",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.base,
        )  # fmt: skip
        wait_for(
            self._accepts_connections, f"mariadbd on port {self.port} (log: {self.log_file})", timeout=60
        )
        with contextlib.closing(self._root()) as root, root.cursor() as cursor:
            for host in ("127.0.0.1", "localhost"):
                cursor.execute(f"CREATE USER '{self.user}'@'{host}' IDENTIFIED BY %s", (self.password,))
                cursor.execute(f"GRANT ALL ON *.* TO '{self.user}'@'{host}' WITH GRANT OPTION")

    def _accepts_connections(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"mariadbd exited with status {self.process.returncode}:\n{self.log_tail()}")
        try:
            self._root().close()
        except MySQLdb.OperationalError:
            return False
        return True

    def _root(self) -> Any:
        return MySQLdb.connect(unix_socket=str(self.socket), user="root", autocommit=True, connect_timeout=5)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=30)  # SIGTERM: mariadbd shuts down cleanly
        shutil.rmtree(self.base, ignore_errors=True)

    def connect(self, database: str | None = None, **kwargs: Any) -> Any:
        """A MySQLdb connection (autocommit) as the admin user over TCP."""
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "charset": "utf8mb4",
            "autocommit": True,
            "connect_timeout": 10,
            **kwargs,
        }
        if database is not None:
            params["database"] = database
        return MySQLdb.connect(**params)

    def execute(self, database: str | None, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with contextlib.closing(self.connect(database)) as conn, conn.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

    def create_database(self, name: str) -> str:
        self.execute(None, f"CREATE DATABASE {quote_name(name)} CHARACTER SET utf8mb4")
        return name

    def drop_database(self, name: str) -> None:
        self.execute(None, f"DROP DATABASE IF EXISTS {quote_name(name)}")

    def database_exists(self, name: str) -> bool:
        return bool(
            self.execute(None, "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
        )

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        return ""


def server_binary() -> str:
    # /usr/sbin is often missing from the PATH of users other than root.
    return shutil.which("mariadbd") or "/usr/sbin/mariadbd"


def make_certificates(directory: Path, common_name: str = "backupsite-test-ca") -> Path:
    """A throwaway CA (``ca.pem``) and a server certificate it signed (``server.pem``/``.key``)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for argv in (
        ["openssl", "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", f"/CN={common_name}"],
        ["openssl", "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "server.pem", "-days", "2", "-extfile", "san.ext"],
    ):  # fmt: skip
        subprocess.run(argv, check=True, capture_output=True, cwd=directory)
    return directory


def quote_name(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def fill_sample(server: MariaDBServer, database: str, rows: int = 50) -> str:
    """A small but varied database: utf8mb4 text, blobs, decimals, times, a foreign key, a view."""
    server.create_database(database)
    with contextlib.closing(server.connect(database)) as conn, conn.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, "
            "balance DECIMAL(20,6), photo BLOB, joined DATETIME(6))"
        )
        cursor.execute(
            "CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id INT NOT NULL, "
            "note TEXT, FOREIGN KEY (customer_id) REFERENCES customers (id))"
        )
        cursor.executemany(
            "INSERT INTO customers (name, balance, photo, joined) VALUES (%s, %s, %s, %s)",
            [
                (
                    f"kündin-{i} 🚀 'q' \\",
                    f"{i * 12.5:.6f}",
                    os.urandom(48) + b"\x00'\\",
                    f"2024-01-02 03:04:{i % 60:02d}.123456",
                )
                for i in range(rows)
            ],
        )
        cursor.executemany(
            "INSERT INTO orders (customer_id, note) VALUES (%s, %s)",
            [(1 + i % rows, f"order {i}\nline two\ttab") for i in range(rows * 2)],
        )
        cursor.execute("CREATE VIEW big_spenders AS SELECT name FROM customers WHERE balance > 100")
    return database


def table_rows(server: MariaDBServer, database: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every base table's rows, ordered by the first column (the primary key in our fixtures)."""
    tables = server.execute(
        None,
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
        "AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        (database,),
    )
    return {
        name: server.execute(database, f"SELECT * FROM {quote_name(name)} ORDER BY 1") for (name,) in tables
    }


@contextlib.contextmanager
def running_mariadb() -> Iterator[MariaDBServer]:
    base = Path(tempfile.mkdtemp(prefix="backupsite-mariadb-"))
    server = MariaDBServer(base=base, port=free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
