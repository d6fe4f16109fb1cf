"""pgjobs.add_jobs / add_jobs_async: one statement (app_jobs.add_jobs) for a batch, ids in
the callers' order, every add_job option per job (fields no job sets take their default),
None where enqueues of the task are ignored, one refusal refuses the whole batch, a
tenant's claim for db_id None, add_job one by one for depends_on or mixed key modes, and
an unknown option is a TypeError.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pgjobs
import psycopg
import pytest
from pgjobs import testing
from psycopg import sql

TENANT = "00000000-0000-0000-0000-00000000000a"


def rows(conn: psycopg.Connection, ids: list[int]) -> list[tuple]:
    return conn.execute(
        "SELECT id, task_identifier, payload, queue_name, priority, max_attempts, key, timeout,"
        " origin, run_at, database_id::text FROM app_jobs.jobs WHERE id = ANY(%s) ORDER BY id",
        (ids,),
    ).fetchall()


def statements(conn: psycopg.Connection, name: str) -> int:
    """How often app_jobs.<name> has run in this session, counted until the statistics are
    flushed (track_functions is on): compare two readings close together."""
    row = conn.execute(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions WHERE funcname = %s",
        (name,),
    ).fetchone()
    return int(row[0])


@pytest.fixture
def conn(db):
    db.execute("SET track_functions = 'all'")
    return db


def test_batch_in_order_with_options(conn):
    run_at = datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    jobs = [
        {"identifier": "a", "payload": {"n": 1}},
        {"identifier": "b", "payload": [1, 2], "queue_name": "q", "priority": -3,
         "max_attempts": 4, "job_key": "k1", "timeout": 2.5, "origin": "web",
         "run_at": run_at, "db_id": uuid.UUID(TENANT)},
        {"identifier": "c"},
    ]
    ids = pgjobs.add_jobs(conn, jobs)
    assert ids == sorted(ids) and len(set(ids)) == 3
    got = rows(conn, ids)
    assert [r[1:9] for r in got] == [
        ("a", {"n": 1}, None, 0, 25, None, None, None),
        ("b", [1, 2], "q", -3, 4, "k1", timedelta(seconds=2.5), "web"),
        ("c", {}, None, 0, 25, None, None, None),
    ]
    assert got[1][9] == run_at and got[1][10] == TENANT
    conn.commit()


def test_fields_every_job_shares_are_stored_for_every_job(conn):
    # One value for all jobs travels once and is filled out on the server; a field that
    # varies travels as its list: the rows are the same as add_job's either way.
    run_at = datetime(2032, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    shared = {"queue_name": "same", "priority": 7, "max_attempts": 3, "timeout": 60,
              "origin": "bulk", "run_at": run_at, "db_id": TENANT}
    ids = pgjobs.add_jobs(conn, [{"identifier": "s", "payload": {"i": i}, **shared}
                                 for i in range(3)])
    ids.append(pgjobs.add_jobs(conn, [{"identifier": "s", "payload": {"i": 3},
                                       **shared, "priority": 8}, {"identifier": "other"}])[0])
    ids.append(pgjobs.add_job(conn, "s", {"i": 4}, **shared))
    got = rows(conn, ids)
    assert [r[2] for r in got] == [{"i": i} for i in range(5)]
    assert {r[1:2] + r[3:] for r in got if r[4] == 7} == {
        ("s", "same", 7, 3, None, timedelta(seconds=60), "bulk", run_at, TENANT)}
    assert [r[4] for r in got] == [7, 7, 7, 8, 7]
    conn.commit()


def test_identifiers_all_missing_are_refused_not_dropped(conn):
    conn.commit()
    with pytest.raises(psycopg.Error) as refused:
        pgjobs.add_jobs(conn, [{"identifier": None}, {"identifier": None}])
    assert refused.value.sqlstate == "PJ001"
    conn.rollback()


def test_one_statement_for_the_whole_batch(conn):
    many, one = statements(conn, "add_jobs"), statements(conn, "add_job")
    pgjobs.add_jobs(conn, [{"identifier": "x", "payload": {"i": i}} for i in range(500)])
    assert statements(conn, "add_jobs") - many == 1
    assert statements(conn, "add_job") - one == 0
    conn.commit()
    count = conn.execute(
        "SELECT count(*) FROM app_jobs.jobs WHERE task_identifier = 'x'").fetchone()[0]
    assert count == 500


def test_a_bad_job_refuses_the_whole_batch(conn):
    conn.commit()
    with pytest.raises(psycopg.Error) as refused:
        pgjobs.add_jobs(conn, [{"identifier": "ok"}, {"identifier": "bad", "max_attempts": 0}])
    assert refused.value.sqlstate == "PJ004"
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM app_jobs.jobs").fetchone()[0] == 0


def test_ignored_tasks_give_none(conn):
    with testing.ignore_enqueues(conn, "skipme"):
        ids = pgjobs.add_jobs(conn, [{"identifier": "keep"}, {"identifier": "skipme"},
                                     {"identifier": "keep"}])
    assert ids[1] is None and ids[0] < ids[2]


def test_depends_on_and_mixed_key_modes_go_one_by_one(conn):
    first = pgjobs.add_job(conn, "root")
    conn.commit()
    many, one = statements(conn, "add_jobs"), statements(conn, "add_job")
    ids = pgjobs.add_jobs(conn, [{"identifier": "after", "depends_on": [first]},
                                 {"identifier": "plain"}])
    assert statements(conn, "add_job") - one == 2
    assert statements(conn, "add_jobs") - many == 0
    conn.commit()
    blocked = conn.execute("SELECT blocked_by FROM app_jobs.jobs WHERE id = %s",
                           (ids[0],)).fetchone()[0]
    assert blocked == 1
    ids = pgjobs.add_jobs(conn, [
        {"identifier": "k", "job_key": "same", "payload": 1},
        {"identifier": "k", "job_key": "same", "payload": 2, "job_key_mode": "unsafe_dedupe"},
    ])
    assert ids[0] == ids[1]
    assert conn.execute("SELECT payload FROM app_jobs.jobs WHERE id = %s",
                        (ids[0],)).fetchone()[0] == 1


def test_unknown_option_is_a_type_error(conn):
    with pytest.raises(TypeError):
        pgjobs.add_jobs(conn, [{"identifier": "x", "colour": "red"}])
    with pytest.raises(TypeError):
        pgjobs.add_jobs(conn, [{"payload": {}}])


def test_a_tenant_login_gets_its_claim(db, conn):
    name = f"pgjobs_t_{uuid.uuid4().hex[:12]}"
    db.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE pgjobs_enqueue").format(sql.Identifier(name)))
    db.execute(sql.SQL("ALTER ROLE {} SET jwt.claims.database_id = {}").format(
        sql.Identifier(name), sql.Literal(TENANT)))
    db.commit()
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo(db.info.dsn, user=name)) as tenant:
            ids = pgjobs.add_jobs(tenant, [{"identifier": "t"}, {"identifier": "t",
                                                                  "db_id": None}])
            tenant.commit()
            with pytest.raises(psycopg.Error) as refused:
                pgjobs.add_jobs(tenant, [{"identifier": "t",
                                          "db_id": "00000000-0000-0000-0000-00000000000b"}])
            assert refused.value.sqlstate == "PJ030"
        tenants = {r[10] for r in rows(db, ids)}
        assert tenants == {TENANT}
    finally:
        db.rollback()
        db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
        db.commit()


def test_async_twin(db):
    async def main() -> list[int | None]:
        async with await psycopg.AsyncConnection.connect(db.info.dsn) as aconn:
            ids = await pgjobs.add_jobs_async(aconn, [{"identifier": "as", "payload": i}
                                                       for i in range(3)])
            await aconn.commit()
            return ids

    ids = asyncio.run(main())
    assert [r[2] for r in rows(db, ids)] == [0, 1, 2]
