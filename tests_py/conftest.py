"""Shared fixtures: databases with pgjobs on the server started by `make test`.

The harness (scripts/run-tests.sh) starts a throwaway cluster and exports PGHOST, PGPORT and
PGUSER. pytest-postgresql's no-process factory points at that server; a template database
gets `CREATE EXTENSION pgjobs` once per run, and every test that asks for `db` receives a
fresh database cloned from it. Tests that need no server live in tests_py/unit and run
without these variables.

Fixtures:
    db            psycopg connection to a fresh database with pgjobs installed
    connect       opens more connections (own sessions) to the database of `db`
    empty_db      makes empty databases (no pgjobs) and returns their conninfo
    sql           runs one statement on an autocommit session of `db`'s database
    conninfo      that database's conninfo, for worker and command processes
    killer        a list of processes, each killed at teardown if still running
    pgbouncer_transaction, pgbouncer_session
                  a real PgBouncer (pooler.py) in front of the cluster, in transaction
                  or session pooling mode, one each per run (skipped when PgBouncer is
                  not installed)
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from faults import Db
from pooler import MISSING, PgBouncer, find_pgbouncer, start_pgbouncer
from psycopg.conninfo import make_conninfo
from pytest_postgresql import factories
from pytest_postgresql.janitor import DatabaseJanitor

PGHOST = os.environ.get("PGHOST")
PGPORT = os.environ.get("PGPORT")
PGUSER = os.environ.get("PGUSER", "postgres")

# Unique per run, so concurrent runs against one dev cluster do not collide.
DBNAME = f"pgjobs_py_{os.getpid()}"


# A test that uses one of these needs the server (db reaches pgjobs_server through
# getfixturevalue, so both are named).
SERVER_FIXTURES = {"pgjobs_server", "db"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse to run tests that need the server when there is none. Tests that do not
    (tests_py/unit) run anywhere: `pytest tests_py/unit` needs no cluster."""
    if PGHOST and PGPORT:
        return
    needy = [item.nodeid for item in items
             if SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if needy:
        raise pytest.UsageError(
            f"PGHOST and PGPORT are not set, and {len(needy)} selected test(s) (e.g. "
            f"{needy[0]}) need the throwaway PostgreSQL cluster that the harness starts. "
            "Run them with `make test` (or export the variables of a running cluster, e.g. "
            "`set -a; . /tmp/dev/env; set +a`); `pytest tests_py/unit` needs no server."
        )


def load_pgjobs(host: str, port: int, user: str, dbname: str, password: str | None,
                **_: object) -> None:
    """Template loader: install the extension (as installed by `make install`)."""
    with psycopg.connect(host=host, port=port, user=user, dbname=dbname,
                         password=password, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pgjobs")


pgjobs_server = factories.postgresql_noproc(
    host=PGHOST,
    port=PGPORT,
    user=PGUSER,
    dbname=DBNAME,
    load=[load_pgjobs],
)

db = factories.postgresql("pgjobs_server")


@pytest.fixture
def connect(db: psycopg.Connection) -> Iterator[Callable[..., psycopg.Connection]]:
    """Factory for extra sessions on the database of `db`; all closed at teardown.

    `connect()` returns an autocommit connection; `connect(autocommit=False)` a
    transactional one.
    """
    conninfo = db.info.dsn
    opened: list[psycopg.Connection] = []

    def _connect(autocommit: bool = True) -> psycopg.Connection:
        conn = psycopg.connect(conninfo, autocommit=autocommit)
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


@pytest.fixture
def empty_db(pgjobs_server) -> Iterator[Callable[[], str]]:
    """Factory for empty databases (pgjobs not installed); returns their conninfo.

    The databases are dropped at teardown.
    """
    janitors: list[DatabaseJanitor] = []

    def _make() -> str:
        name = f"{DBNAME}_e{uuid.uuid4().hex[:8]}"
        janitor = DatabaseJanitor(
            user=pgjobs_server.user,
            host=pgjobs_server.host,
            port=pgjobs_server.port,
            dbname=name,
            password=pgjobs_server.password,
        )
        janitor.init()
        janitors.append(janitor)
        return make_conninfo(
            host=pgjobs_server.host,
            port=pgjobs_server.port,
            user=pgjobs_server.user,
            dbname=name,
        )

    yield _make
    for janitor in janitors:
        janitor.drop()


@pytest.fixture
def sql(connect: Callable[..., psycopg.Connection]) -> Callable[..., list]:
    """Run one statement on an autocommit session of the test database; its rows (or [])."""
    conn = connect()

    def _sql(query: str, params: object = None) -> list:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    return _sql


@pytest.fixture
def conninfo(db: psycopg.Connection) -> str:
    """The test database's conninfo, for worker and command processes."""
    return db.info.dsn


@pytest.fixture
def killer() -> Iterator[list[subprocess.Popen]]:
    """Every process a test appends here is killed at teardown, whatever happened."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.fixture
def dbx(db: psycopg.Connection) -> Iterator[Db]:
    """The test database through the fault suite's Db helper (its own connection)."""
    handle = Db(db.info.dsn)
    yield handle
    handle.close()


# -- PgBouncer (test_pooler.py) -------------------------------------------------------------

# Server connections per database (and user) in each pool. The session pool is small on
# purpose: test_pooler's connection-budget test fills it to see a worker wait for one.
PGBOUNCER_TRANSACTION_POOL = 20
PGBOUNCER_SESSION_POOL = 4


def _pgbouncer(mode: str, pool_size: int) -> Iterator[PgBouncer]:
    if find_pgbouncer() is None:
        pytest.skip(MISSING)
    bouncer = start_pgbouncer(mode, pool_size)
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture(scope="session")
def pgbouncer_transaction() -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling mode in front of the cluster (for the whole run)."""
    yield from _pgbouncer("transaction", PGBOUNCER_TRANSACTION_POOL)


@pytest.fixture(scope="session")
def pgbouncer_session() -> Iterator[PgBouncer]:
    """PgBouncer in session pooling mode, PGBOUNCER_SESSION_POOL server connections per
    database."""
    yield from _pgbouncer("session", PGBOUNCER_SESSION_POOL)
