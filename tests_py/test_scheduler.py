"""Scheduler tick (app_jobs.run_due_scheduled_jobs) under concurrency, after downtime, and
schedule validation.

Covers:
    * 6 sessions ticking the same as_of values together, minute by minute across the due
      slots of a few schedules ("* * * * *" and "*/2 * * * *"): every (schedule, slot) is
      enqueued exactly once, whoever wins each tick.
    * restart after missed slots: without backfill only the latest missed slot is enqueued
      and next_run_at moves into the future; with {"backfill": "10 minutes"} every missed
      slot inside the window is enqueued, none older.
    * bad schedule_info refused when written, with its SQLSTATE (PJ008 bad cron rule or
      field, PJ010 unknown time zone, PJ011 end before start).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta

import psycopg
import pytest
from sessions import Crew, run_concurrently

N_SESSIONS = 6
N_TICKS = 10

TICK = "SELECT id, task_identifier, run_at FROM app_jobs.run_due_scheduled_jobs(as_of := %s)"


def add_schedule(conn: psycopg.Connection, identifier: str, info: dict) -> int:
    return conn.execute(
        "SELECT (app_jobs.add_scheduled_job(identifier := %s, schedule_info := %s)).id",
        (identifier, json.dumps(info)),
    ).fetchone()[0]


def force_next_run(conn: psycopg.Connection, schedule_id: int, at: datetime) -> None:
    # Updating next_run_at alone does not fire the trigger that recomputes it.
    conn.execute(
        "UPDATE app_jobs.scheduled_jobs SET next_run_at = %s WHERE id = %s", (at, schedule_id)
    )


def jobs_per_slot(conn: psycopg.Connection) -> Counter:
    rows = conn.execute(
        "SELECT task_identifier, run_at, count(*) FROM app_jobs.jobs GROUP BY 1, 2"
    ).fetchall()
    return Counter({(ident, run_at): n for ident, run_at, n in rows})


def test_concurrent_ticks_enqueue_each_slot_once(db, connect):
    db.autocommit = True
    base = db.execute("SELECT date_trunc('minute', now()) - interval '30 minutes'").fetchone()[0]
    even_base = base if base.minute % 2 == 0 else base + timedelta(minutes=1)
    schedules = {
        "every_a": ({"rule": "* * * * *"}, base, 1),
        "every_b": ({"rule": "* * * * *"}, base, 1),
        "every_2": ({"rule": "*/2 * * * *"}, even_base, 2),
    }
    expected: set[tuple[str, datetime]] = set()
    ticks = [base + timedelta(minutes=k) for k in range(N_TICKS)]
    for ident, (info, first, step) in schedules.items():
        force_next_run(db, add_schedule(db, ident, info), first)
        slot = first
        while slot <= ticks[-1]:
            expected.add((ident, slot))
            slot += timedelta(minutes=step)
    assert len(expected) == 2 * N_TICKS + N_TICKS // 2

    def session(crew: Crew) -> list[tuple]:
        conn = connect()
        got: list[tuple] = []
        for as_of in ticks:
            crew.ready()  # every session ticks this as_of together
            if not crew.keep_going():
                break
            got += conn.execute(TICK, (as_of,)).fetchall()
        return got

    results = run_concurrently([session] * N_SESSIONS, timeout=60)

    returned = [row for rows in results for row in rows]
    assert len(returned) == len(expected)
    assert len({row[0] for row in returned}) == len(expected)
    per_slot = jobs_per_slot(db)
    assert set(per_slot) == expected
    assert all(n == 1 for n in per_slot.values()), per_slot
    assert sum(per_slot.values()) == len(expected)
    # Every schedule now waits for its first slot after the last tick.
    assert db.execute(
        "SELECT bool_and(next_run_at > %s) FROM app_jobs.scheduled_jobs", (ticks[-1],)
    ).fetchone()[0]


def missed_slots_tick(db, info: dict) -> tuple[datetime, list[datetime], datetime]:
    """Schedule `info`, put next_run_at 30 minutes back, tick once at now()."""
    db.autocommit = True
    sid = add_schedule(db, "missed", info)
    db.execute(
        "UPDATE app_jobs.scheduled_jobs SET next_run_at = date_trunc('minute', now())"
        " - interval '30 minutes' WHERE id = %s",
        (sid,),
    )
    with db.transaction():
        now = db.execute("SELECT now()").fetchone()[0]
        db.execute(TICK, (now,)).fetchall()
    run_ats = [r[0] for r in db.execute("SELECT run_at FROM app_jobs.jobs ORDER BY run_at")]
    next_run = db.execute(
        "SELECT next_run_at FROM app_jobs.scheduled_jobs WHERE id = %s", (sid,)
    ).fetchone()[0]
    return now, run_ats, next_run


def test_missed_slots_without_backfill_enqueue_latest_only(db):
    now, run_ats, next_run = missed_slots_tick(db, {"rule": "* * * * *"})
    latest = now.replace(second=0, microsecond=0)
    assert run_ats == [latest]
    assert now - timedelta(minutes=1) < run_ats[0] <= now
    assert next_run > now
    assert next_run == latest + timedelta(minutes=1)


def test_missed_slots_with_backfill_enqueue_window(db):
    now, run_ats, next_run = missed_slots_tick(
        db, {"rule": "* * * * *", "backfill": "10 minutes"}
    )
    window_start = now - timedelta(minutes=10)
    first = window_start.replace(second=0, microsecond=0)
    if first < window_start:
        first += timedelta(minutes=1)
    expected = []
    slot = first
    while slot <= now:
        expected.append(slot)
        slot += timedelta(minutes=1)
    assert len(expected) in (10, 11)
    assert run_ats == expected
    assert min(run_ats) >= window_start
    assert next_run > now


@pytest.mark.parametrize(
    ("info", "sqlstate"),
    [
        ({"rule": "61 * * * *"}, "PJ008"),
        ({"rule": "* * * *"}, "PJ008"),
        ({"rule": "*/0 * * * *"}, "PJ008"),
        ({"rule": "foo * * * *"}, "PJ008"),
        ({"rule": "* * * * *", "tz": "Mars/Olympus_Mons"}, "PJ010"),
        (
            {"rule": "* * * * *", "start": "2030-01-02T00:00Z", "end": "2030-01-01T00:00Z"},
            "PJ011",
        ),
        ({"minute": 5}, "PJ008"),
    ],
    ids=["minute-61", "four-fields", "step-0", "name-in-minute", "unknown-tz",
         "end-before-start", "minute-not-array"],
)
def test_bad_schedule_refused(db, info, sqlstate):
    db.autocommit = True
    with pytest.raises(psycopg.Error) as exc:
        add_schedule(db, "bad", info)
    assert exc.value.diag.sqlstate == sqlstate, exc.value
    assert db.execute("SELECT count(*) FROM app_jobs.scheduled_jobs").fetchone()[0] == 0
