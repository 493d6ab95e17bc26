"""The admin benchmark's PostgreSQL cluster: the test suite's kind (``tests/servers/postgres.py``:
loopback, a free port at each start, fsync off, the same settings), but its data directory under
``bench/work/admin/postgresql/`` outlives the run, so a generated catalog is reused."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from measure import ROOT, BenchError

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.servers

from tests.servers import free_port
from tests.servers.postgres import PostgresServer, bin_dir

# The test server's settings (tests/servers/postgres.py); the port and the socket are added.
SETTINGS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=50 "
    "-c shared_buffers=128MB -c autovacuum=off"
)


class KeptPostgres(PostgresServer):
    @classmethod
    def open(cls, base: Path) -> KeptPostgres:
        """The cluster under ``base``, started; created first (initdb) when there is none."""
        server = cls(base=base, port=free_port())
        server.start()
        return server

    @staticmethod
    def wipe(base: Path) -> None:
        shutil.rmtree(base, ignore_errors=True)

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self.wipe(self.base)
            self.base.mkdir(parents=True)
            self.base.chmod(0o755)
            super().start()  # initdb, then start, as the test suite does
            return
        settings = f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories={self.base} {SETTINGS}"
        argv = [str(bin_dir(self.version) / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"),
                "-o", settings, "-w", "-t", "120", "start"]  # fmt: skip
        done = subprocess.run(
            self._as_owner(argv), capture_output=True, text=True, cwd=self.base, check=False
        )
        if done.returncode != 0:
            raise BenchError(f"starting the kept PostgreSQL cluster failed: {done.stderr or done.stdout}")

    def stop(self) -> None:
        """A clean shutdown; the data directory stays."""
        argv = [str(bin_dir(self.version) / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
        subprocess.run(self._as_owner(argv), capture_output=True, cwd=self.base, check=False)
