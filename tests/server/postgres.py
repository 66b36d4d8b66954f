"""A real PostgreSQL for the ledger's tests and the server benchmark: `initdb` into a temporary folder,
`pg_ctl start` on a free loopback port (its unix socket in the same folder), stopped and removed after.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user (Debian's package
creates it) through `runuser`. No PostgreSQL installed: `PostgresMissing`, whose message says how to
install it (the tests turn it into a failure, never a silent skip; .ci/run installs it).
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = ("PostgreSQL is not installed (no initdb on PATH or under /usr/lib/postgresql/*/bin): "
                "install it with `apt-get install -y postgresql` (Debian/Ubuntu; .ci/run does this), "
                "`brew install postgresql` (macOS) or your system's package")


class PostgresMissing(RuntimeError):
    pass


def pg_bin(name: str) -> str:
    """The path of a PostgreSQL server program (initdb, pg_ctl)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return candidates[-1]
    raise PostgresMissing(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throwaway cluster. `url(db)` is a password URL over TCP on 127.0.0.1; `create_database()`
    gives each test its own database."""

    USER = "postgres"

    def __init__(self, *, durable: bool = False) -> None:
        """`durable=False` turns fsync off (tests); the benchmark keeps PostgreSQL's defaults."""
        self.initdb = pg_bin("initdb")
        self.pg_ctl = pg_bin("pg_ctl")
        self.durable = durable
        self.password = "pw-" + secrets.token_hex(8)
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="shepherd-pg-"))  # not under pytest's 0700 root-only tmp
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._as_other = os.geteuid() == 0
        self._count = 0
        self.started = False

    def _run(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = ["runuser", "-u", "postgres", "--", *args] if self._as_other else args
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed ({out.returncode}): {out.stderr[-2000:]}{log}")
        return out

    def start(self) -> PostgresServer:
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_other:
            shutil.chown(self.dir, "postgres")
            shutil.chown(pwfile, "postgres")
        self._run([self.initdb, "-D", str(self.data), "-U", self.USER, "--pwfile", str(pwfile),
                   "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-instructions"])
        opts = f"-c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} -c max_connections=200"
        if not self.durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        for _ in range(3):  # a port taken between free_port() and the bind: try another
            self.port = free_port()
            try:
                self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                           "-o", f"-p {self.port} {opts}", "start"])
                break
            except RuntimeError:
                if "already in use" not in (self.log.read_text(errors="replace") if self.log.exists() else ""):
                    raise
        self.started = True
        return self

    def url(self, dbname: str = "postgres", *, password: str | None = None) -> str:
        return f"postgresql://{self.USER}:{password or self.password}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        self._count += 1
        name = f"t{self._count}_{secrets.token_hex(3)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def version(self) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                                         "('fsync', 'synchronous_commit')").fetchall())
            return f"{conn.execute('SHOW server_version').fetchone()[0]} " + \
                ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))

    def stop(self) -> None:
        if self.started:
            try:
                self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"], timeout=60)
            finally:
                self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:  # noqa: PYI034 (never subclassed)
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
