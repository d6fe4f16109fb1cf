"""finish_jobs of a large batch of plain completions: the batched "jobs:stopped"
notifications are chunked so that none exceeds 8,000 bytes whatever the origins and task
names hold (control characters that JSON escapes to six bytes each, multi-byte UTF-8,
quotes and backslashes), and a listener receives every job's event exactly once, with
its task and origin as stored.
"""

from __future__ import annotations

import json
import time

import psycopg
import pytest
from psycopg.types.json import Jsonb

CHANNEL = "jobs:stopped"
LIMIT = 8000

# name -> (origin of 255 characters, task identifier, number of jobs)
CASES = {
    "origins of U+0001 (6 bytes each in JSON)": ("\x01" * 255, "chunk_task", 300),
    "origins of U+001F and U+0001 mixed with text": (("\x1fa\x01" * 85), "chunk_task", 300),
    "origins of 4-byte emoji": ("\U0001f600" * 255, "chunk_task", 300),
    "origins of 2-byte characters": ("é" * 255, "chunk_task", 300),
    "origins of quotes and backslashes": ('"\\' * 127 + '"', "chunk_task", 300),
    "long 3-byte task names and origins": ("日" * 255, "日" * 126, 300),
    "short origins, many jobs": ("o", "chunk_task", 2000),
    "no origin, many jobs": (None, "t", 2000),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_every_completion_arrives_in_notifications_under_the_limit(db, connect, case):
    origin, task, n = case
    ids = [r[0] for r in db.execute(
        "SELECT (app_jobs.add_job(identifier := %s, origin := %s)).id"
        " FROM generate_series(1, %s)", (task, origin, n)).fetchall()]
    claimed = db.execute(
        "SELECT id, attempts FROM app_jobs.get_jobs('w_chunks', NULL, '4 hours', %s)", (n,)
    ).fetchall()
    assert sorted(i for i, _ in claimed) == sorted(ids)
    db.commit()

    listener = connect()
    listener.execute(f'LISTEN "{CHANNEL}"')
    outcomes = [{"id": i, "attempt": a, "outcome": "completed"} for i, a in claimed]
    try:
        rows = db.execute("SELECT job_id, status FROM app_jobs.finish_jobs('w_chunks', %s)",
                          (Jsonb(outcomes),)).fetchall()
    except psycopg.Error as exc:
        pytest.fail(f"finish_jobs of {n} completions failed: {exc.sqlstate} {exc}")
    assert sorted(rows) == sorted((i, "completed") for i in ids)
    db.commit()

    events: list[dict] = []
    sizes: list[int] = []
    deadline = time.monotonic() + 30
    while len(events) < n and time.monotonic() < deadline:
        before = len(sizes)
        for note in listener.notifies(timeout=2, stop_after=100):
            sizes.append(len(note.payload.encode()))
            data = json.loads(note.payload)
            events += data if isinstance(data, list) else [data]
        if len(sizes) == before:
            break  # 2 s without a notification: no more are coming
    # Anything more that follows (a duplicate would be an error too).
    for note in listener.notifies(timeout=0.3):
        sizes.append(len(note.payload.encode()))
        data = json.loads(note.payload)
        events += data if isinstance(data, list) else [data]

    assert max(sizes) <= LIMIT, sorted(sizes)[-5:]
    got = [e["id"] for e in events]
    assert sorted(got) == sorted(ids), (
        f"{len(got)} events for {n} jobs; missing {sorted(set(ids) - set(got))[:10]}")
    assert all(e["task"] == task and e["origin"] == origin and e["outcome"] == "completed"
               and e["will_retry"] is False and e["bundle_id"] is None for e in events)
    assert len(sizes) < n, "the completions of a batch share notifications"
