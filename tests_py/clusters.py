"""Throwaway PostgreSQL clusters of their own (scripts/pgcluster.sh), for tests that need
several servers: the sharding tests (a proxy and two shards) and the dashboard's shard
tests (two shards). Each cluster can be stopped and started again (an outage)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Cluster:
    """A running cluster: its directory and the environment pgcluster.sh printed."""

    dir: Path
    env: dict[str, str]

    def conninfo(self, dbname: str) -> str:
        """A database of this cluster."""
        return make_conninfo(host=self.env["PGHOST"], port=self.env["PGPORT"],
                             user=self.env["PGUSER"], dbname=dbname)

    def pg_ctl(self, *args: str) -> None:
        """pg_ctl on this cluster's data directory (as postgres when we are root)."""
        cmd = [f"{self.env['PGJOBS_PG_BINDIR']}/pg_ctl", "-D", str(self.dir / "data"), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def stop_now(self) -> None:
        """An outage: stop the server at once (-m immediate)."""
        self.pg_ctl("-m", "immediate", "-w", "stop")

    def start_again(self) -> None:
        """Start the stopped server again, logging where pgcluster.sh does."""
        self.pg_ctl("-l", str(self.dir / "log" / "server.log"), "-w", "start")


def start_cluster(path: Path) -> Cluster:
    """A new cluster in `path` (its parent must be reachable by the postgres OS user)."""
    # Durable commits: the outage tests stop a server with -m immediate, and "each job ran
    # once" holds only if a commit the worker saw survives that (with synchronous_commit
    # off, the last outcomes are lost and their jobs rightly run again).
    durable = {**os.environ, "PGJOBS_TEST_FSYNC": "on", "PGJOBS_TEST_SYNC_COMMIT": "on"}
    out = subprocess.run(["bash", str(ROOT / "scripts/pgcluster.sh"), "start", str(path)],
                         capture_output=True, text=True, check=True, timeout=120,
                         env=durable).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        for word in shlex.split(line)[1:]:  # after "export"
            key, _, value = word.partition("=")
            env[key] = value
    return Cluster(path, env)


def stop_cluster(cluster: Cluster) -> None:
    """Stop the cluster for good (pgcluster.sh stop)."""
    subprocess.run(["bash", str(ROOT / "scripts/pgcluster.sh"), "stop", str(cluster.dir)],
                   capture_output=True, timeout=60)


@contextmanager
def running_clusters(prefix: str, names: tuple[str, ...]) -> Iterator[list[Cluster]]:
    """A started cluster per name, stopped and removed at the end, whatever happens."""
    # Not under pytest's tmp_path: the server may run as the postgres OS user, who must
    # be able to reach the cluster directories.
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    clusters: list[Cluster] = []
    try:
        for name in names:
            clusters.append(start_cluster(base / name))
        yield clusters
    finally:
        for c in clusters:
            stop_cluster(c)
        shutil.rmtree(base, ignore_errors=True)


def pgjobs_database(cluster: Cluster, dbname: str = "jobs") -> str:
    """Create a database on the cluster with pgjobs installed (plain SQL); its conninfo."""
    from pgjobs import installer

    with psycopg.connect(cluster.conninfo("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    with psycopg.connect(cluster.conninfo(dbname), autocommit=True) as conn:
        installer.install(conn)
    return cluster.conninfo(dbname)
