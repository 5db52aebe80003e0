"""A real PostgreSQL server for the tests: ``initdb`` + ``pg_ctl`` in a temporary directory.

One cluster per test session on a free port (TCP on 127.0.0.1, trust authentication for the
superuser, a password for the ``fastgw`` role the gateway uses); each test gets a fresh database
(``new_database``). As root, the server runs as the ``postgres`` user, which PostgreSQL requires.
``stop`` is an immediate shutdown (the outage a gateway must survive); ``start`` brings the same
cluster, and its data, back.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

PASSWORD = "pg-test-password"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


INITDB = _binary("initdb")
PG_CTL = _binary("pg_ctl")
PSQL = _binary("psql")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        if INITDB is None or PG_CTL is None or PSQL is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
        self.directory = Path(tempfile.mkdtemp(prefix="fastgw-pg-"))
        self.data = self.directory / "data"
        self.port = _free_port()
        self._as: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *argv: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [*self._as, *argv], capture_output=True, text=True, timeout=timeout, cwd=self.directory
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr[-2000:]}")
        return done.stdout

    def init(self) -> PostgresServer:
        assert INITDB is not None
        if self._as:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(
            INITDB,
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.directory}'\nfsync = off\n"
                "full_page_writes = off\nmax_connections = 200\n"
                "shared_buffers = 64MB\n"
            )
        # The gateway's role logs in with a password, as it would in production.
        (self.data / "pg_hba.conf").write_text(
            "local all postgres trust\nhost all postgres 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
        )
        self.start()
        self.psql(f"CREATE ROLE fastgw LOGIN PASSWORD '{PASSWORD}'")
        return self

    def start(self, timeout: float = 30) -> None:
        assert PG_CTL is not None
        self._run(
            PG_CTL,
            "-D",
            str(self.data),
            "-l",
            str(self.directory / "pg.log"),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        )

    def stop(self) -> None:
        assert PG_CTL is not None
        self._run(PG_CTL, "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs and delete its directory."""
        try:
            self.stop()
        except RuntimeError:  # not running
            pass
        shutil.rmtree(self.directory, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        assert PSQL is not None
        return self._run(
            PSQL,
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            sql,
        )

    def new_database(self) -> str:
        """A fresh, empty database owned by ``fastgw``; returns the gateway's store URL for it."""
        name = f"gw_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name} OWNER fastgw")
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgresql://fastgw:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def wait_stopped(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                return
            time.sleep(0.05)
