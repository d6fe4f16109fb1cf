"""A real PgBouncer in front of the test cluster, for the pooler tests (test_pooler.py).

`PgBouncer(mode, pool_size)` writes a configuration into a directory of its own, starts
`pgbouncer` in the foreground on a free port of 127.0.0.1 (as the `postgres` OS user when
the tests run as root: PgBouncer refuses to run as root, as the server does) and forwards
every database name to the cluster of the test run (`* = host=$PGHOST port=$PGPORT`), so
the per-test databases of the `db` fixture work through it. Authentication is `trust`
(the user must still be listed in the auth_file); the same user is PgBouncer's admin, so
`show("POOLS")` and `kill(dbname)` reach its console. No Unix socket is opened, so a
PgBouncer system service (Debian's, on 6432) never clashes with these.

`find_pgbouncer()` is None when it is not installed; the fixtures then skip with
MISSING, which says what to install.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

MISSING = (
    "pgbouncer is not installed: the pooler tests need PgBouncer (Debian: "
    "`apt-get install pgbouncer`; scripts/bootstrap.sh installs it when run as root)"
)

# Debian installs the binary in /usr/sbin, which is not on a normal user's PATH.
_SBIN = "/usr/sbin/pgbouncer"


def find_pgbouncer() -> str | None:
    """The pgbouncer binary (PATH first, then Debian's /usr/sbin), or None."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return _SBIN if os.access(_SBIN, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_server(conninfo: str, host: str, port: int) -> str:
    """conninfo with another host and port (same database, user, everything else)."""
    params = conninfo_to_dict(conninfo)
    params.update(host=host, port=str(port))
    return make_conninfo(**params)


class PgBouncerError(RuntimeError):
    pass


class PgBouncer:
    """One pgbouncer process; start() it, stop() it (idempotent)."""

    def __init__(self, binary: str, mode: str, pool_size: int, server_host: str,
                 server_port: int, user: str, max_client_conn: int = 500) -> None:
        assert mode in ("session", "transaction"), mode
        self.binary, self.mode, self.pool_size = binary, mode, pool_size
        self.server_host, self.server_port, self.user = server_host, server_port, user
        self.max_client_conn = max_client_conn
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.dir = Path(tempfile.mkdtemp(prefix=f"pgjobs-pgbouncer-{mode}-"))
        self._run_as = None
        if os.geteuid() == 0:
            # PgBouncer refuses root: run it as postgres, in a directory it can write.
            entry = pwd.getpwnam("postgres")
            self._run_as = (entry.pw_uid, entry.pw_gid)
            os.chown(self.dir, *self._run_as)
        self.log_path = self.dir / "pgbouncer.log"

    # -- lifecycle ---------------------------------------------------------------------

    def _write_config(self) -> Path:
        users = self.dir / "users.txt"
        users.write_text(f'"{self.user}" ""\n')
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(f"""\
[databases]
* = host={self.server_host} port={self.server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {users}
admin_users = {self.user}
pool_mode = {self.mode}
default_pool_size = {self.pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = {self.max_client_conn}
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
""")
        for path in (users, ini):
            if self._run_as:
                os.chown(path, *self._run_as)
        return ini

    def start(self, attempts: int = 5) -> PgBouncer:
        """Start on a free port (another one if that port was taken meanwhile) and wait
        until the admin console answers."""
        last = ""
        for _ in range(attempts):
            self.port = free_port()
            ini = self._write_config()
            log = open(self.log_path, "ab")
            if self._run_as:
                os.fchown(log.fileno(), *self._run_as)
            kwargs = {}
            if self._run_as:
                kwargs = {"user": self._run_as[0], "group": self._run_as[1],
                          "extra_groups": []}
            self.proc = subprocess.Popen([self.binary, str(ini)], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.dir, **kwargs)
            log.close()
            if self._wait_ready(10):
                return self
            last = self.log_tail()
            self._terminate()
            if "already in use" not in last:
                break
        raise PgBouncerError(f"pgbouncer ({self.mode} mode) did not start:\n{last}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                self.show("VERSION")
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        return False

    def _terminate(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # SIGTERM: immediate shutdown (clients are disconnected).
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        """End the process and remove its directory."""
        self._terminate()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- clients -----------------------------------------------------------------------

    def conninfo(self, dbname: str, **extra: object) -> str:
        """A conninfo for `dbname` through this PgBouncer."""
        return make_conninfo(host="127.0.0.1", port=str(self.port), user=self.user,
                             dbname=dbname, **extra)

    def url_for(self, conninfo: str) -> str:
        """The database of a direct conninfo, reached through this PgBouncer."""
        return with_server(conninfo, "127.0.0.1", self.port)

    def show(self, what: str) -> list[dict]:
        """SHOW <what> on the admin console, as dicts. The console only speaks the simple
        query protocol: ClientCursor sends a parameterless statement that way."""
        with psycopg.connect(self.conninfo("pgbouncer"), autocommit=True,
                             cursor_factory=psycopg.ClientCursor,
                             prepare_threshold=None, connect_timeout=2) as conn:
            cur = conn.execute(f"SHOW {what}")
            names = [c.name for c in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def pool(self, dbname: str) -> dict | None:
        """The row of SHOW POOLS for dbname (and this user), None before its first client."""
        for row in self.show("POOLS"):
            if row["database"] == dbname and row["user"] == self.user:
                return row
        return None

    def clients(self, dbname: str) -> list[dict]:
        """SHOW CLIENTS rows of dbname (application_name says whose)."""
        return [r for r in self.show("CLIENTS") if r["database"] == dbname]

    def servers(self, dbname: str) -> list[dict]:
        """SHOW SERVERS rows of dbname: the server connections PgBouncer holds for it."""
        return [r for r in self.show("SERVERS") if r["database"] == dbname]


def start_pgbouncer(mode: str, pool_size: int) -> PgBouncer:
    """A started PgBouncer in front of the cluster named by PGHOST/PGPORT/PGUSER."""
    binary = find_pgbouncer()
    if binary is None:
        raise PgBouncerError(MISSING)
    host = os.environ.get("PGHOST") or "127.0.0.1"
    port = int(os.environ.get("PGPORT") or 5432)
    user = os.environ.get("PGUSER", "postgres")
    bouncer = PgBouncer(binary, mode, pool_size, host, port, user)
    try:
        return bouncer.start()
    except BaseException:
        bouncer.stop()
        raise
