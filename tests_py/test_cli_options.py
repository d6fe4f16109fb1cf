"""`pgjobs --database-url URL <cmd>` and `pgjobs <cmd> --database-url URL` both work for every
subcommand (after the subcommand wins; `web` with --check, which connects and exits), run as
real processes whose environment points everywhere else, and every subcommand's --help
shows the option.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from pgjobs import admin_cli, installer
from psycopg.conninfo import make_conninfo

PGJOBS = str(Path(sys.executable).parent / "pgjobs")

# Where no server listens: a process that reaches the database did not come from here.
NOWHERE = "host=/nonexistent-pgjobs-socket-dir port=1 dbname=nowhere user=nobody"

WRONG_ENV = {
    "PGJOBS_DATABASE_URL": NOWHERE,
    "DATABASE_URL": NOWHERE,
    "PGHOST": "/nonexistent-pgjobs-socket-dir",
    "PGPORT": "1",
    "PGDATABASE": "nowhere",
}

Check = Callable[[subprocess.CompletedProcess], None]


def run_pgjobs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PGJOBS, *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **WRONG_ENV})


def make_failed(conn: psycopg.Connection, task: str) -> int:
    job_id = conn.execute("SELECT id FROM app_jobs.add_job(identifier := %s, max_attempts := 1)",
                          (task,)).fetchone()[0]
    conn.execute("SELECT app_jobs.get_jobs('w1', ARRAY[%s], interval '1 hour', 10)", (task,))
    conn.execute("SELECT app_jobs.fail_job('w1', %s, 'it broke')", (job_id,))
    return job_id


# Each case prepares the target database (conn) and returns the arguments that follow the
# subcommand and a check that the command did its work in that database.

def case_install(conn: psycopg.Connection) -> tuple[list[str], Check]:
    def check(res: subprocess.CompletedProcess) -> None:
        assert "installed pgjobs" in res.stdout
        assert conn.execute("SELECT app_jobs.pgjobs_version()").fetchone()[0] == (
            installer.latest_version())
    return [], check


def case_upgrade(conn: psycopg.Connection) -> tuple[list[str], Check]:
    def check(res: subprocess.CompletedProcess) -> None:
        assert "up to date" in res.stdout
    return [], check


def case_status(conn: psycopg.Connection) -> tuple[list[str], Check]:
    conn.execute("SELECT app_jobs.add_job(identifier := 'only_in_the_target_db')")

    def check(res: subprocess.CompletedProcess) -> None:
        assert "only_in_the_target_db" in res.stdout
    return [], check


def case_add(conn: psycopg.Connection) -> tuple[list[str], Check]:
    def check(res: subprocess.CompletedProcess) -> None:
        assert conn.execute("SELECT task_identifier, payload::text FROM app_jobs.jobs"
                            ).fetchall() == [("added_here", '{"n": 1}')]
    return ["added_here", '{"n": 1}'], check


def case_retry(conn: psycopg.Connection) -> tuple[list[str], Check]:
    job_id = make_failed(conn, "to_retry")

    def check(res: subprocess.CompletedProcess) -> None:
        assert f"retrying 1 job(s): [{job_id}]" in res.stdout
        assert conn.execute("SELECT attempts FROM app_jobs.jobs WHERE id = %s",
                            (job_id,)).fetchall() == [(0,)]
    return [str(job_id)], check


def case_remove(conn: psycopg.Connection) -> tuple[list[str], Check]:
    job_id = make_failed(conn, "to_remove")

    def check(res: subprocess.CompletedProcess) -> None:
        assert f"removed 1 job(s): [{job_id}]" in res.stdout
        assert conn.execute("SELECT count(*) FROM app_jobs.jobs").fetchone()[0] == 0
    return [str(job_id)], check


def case_web(conn: psycopg.Connection) -> tuple[list[str], Check]:
    pytest.importorskip("starlette")
    dbname = conn.execute("SELECT current_database()").fetchone()[0]

    def check(res: subprocess.CompletedProcess) -> None:
        assert f"ready to serve http://127.0.0.1:8080/ (database {dbname}," in res.stdout
    return ["--check"], check


def case_shard(conn: psycopg.Connection) -> tuple[list[str], Check]:
    # The proxy routes to one shard: this cluster's postgres database (never reached here:
    # PL/Proxy connects on the first routed call).
    if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'plproxy'"
                        ).fetchone():
        pytest.skip("PL/Proxy is not installed: apt-get install postgresql-15-plproxy")
    shard = make_conninfo(conn.info.dsn, dbname="postgres")

    def check(res: subprocess.CompletedProcess) -> None:
        assert "proxy ready: 1 shard(s)" in res.stdout
        assert conn.execute("SELECT app_jobs.shard_count()").fetchone()[0] == 1
    return ["--shard", shard], check


CASES = {
    "install": case_install,
    "upgrade": case_upgrade,
    "status": case_status,
    "add": case_add,
    "retry": case_retry,
    "remove": case_remove,
    "web": case_web,
    "shard": case_shard,
}

# Where the URL goes: before the subcommand, after it, or after it with a wrong one before.
POSITIONS = {
    "before": lambda url, cmd, rest: ["--database-url", url, cmd, *rest],
    "after": lambda url, cmd, rest: [cmd, *rest, "--database-url", url],
    "after_wins": lambda url, cmd, rest: ["--database-url", NOWHERE, cmd, *rest,
                                          "--database-url", url],
}


def subcommands() -> list[str]:
    parser = admin_cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(action.choices)


def test_every_subcommand_has_a_case():
    assert sorted(CASES) == subcommands()


@pytest.mark.parametrize("position", sorted(POSITIONS))
@pytest.mark.parametrize("command", sorted(CASES))
def test_database_url_before_or_after_the_subcommand(command, position, request, empty_db):
    # The database the command must reach: empty for install and shard (the proxy), else
    # one with pgjobs.
    if command in ("install", "shard"):
        target = empty_db()
    else:
        target = request.getfixturevalue("db").info.dsn
    with psycopg.connect(target, autocommit=True) as conn:
        rest, check = CASES[command](conn)
        res = run_pgjobs(*POSITIONS[position](target, command, rest))
        assert res.returncode == 0, res.stderr
        check(res)


def test_after_the_subcommand_wins_over_before(db):
    res = run_pgjobs("--database-url", db.info.dsn, "status", "--database-url", NOWHERE)
    assert res.returncode == 1
    assert "cannot connect to" in res.stderr and "nonexistent-pgjobs-socket-dir" in res.stderr


@pytest.mark.parametrize("command", subcommands())
def test_every_subcommand_help_shows_database_url(command):
    res = run_pgjobs(command, "--help")
    assert res.returncode == 0, res.stderr
    assert "--database-url" in res.stdout
