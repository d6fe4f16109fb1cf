"""Property-based input testing: random values thrown at the SQL API.

Hypothesis generates text (any Unicode, NUL bytes, control and invisible characters, SQL-
and format-looking strings, huge strings), integers (int64 extremes and beyond),
timestamps and intervals (infinity, out-of-range years, garbage) and JSON (nested, deep,
huge, invalid) for add_job, get_job / get_jobs, complete_job / fail_job / cancel_job,
add_scheduled_job / schedule_next_run / run_scheduled_job / run_due_scheduled_jobs and
set_setting. Every call must either succeed, with the stored row as given and the
invariants intact, or raise one of the SQLSTATEs in ALLOWED, never anything else: no
syntax error (42xxx, which would mean the input became SQL), no internal error, no
constraint violation that validation should have caught first.

Text reaches the server as UTF-8 bytes through convert_from(...), so NUL bytes are sent to
PostgreSQL rather than refused by the client. Each example runs in its own transaction,
rolled back afterwards; the fixture's committed jobs (waiting, keyed, running, failed for
good) are what every example starts from.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

# The SQLSTATEs a call may raise, and why they are expected.
ALLOWED = {
    # pgjobs' own validation (README, "Error codes").
    "PJ001": "task identifier NULL, empty or longer than 126 characters",
    "PJ002": "queue name empty or longer than 126 characters",
    "PJ003": "job key empty or longer than 512 characters",
    "PJ004": "max_attempts below 1",
    "PJ005": "worker_id NULL, empty or longer than 256 characters",
    "PJ006": "batch_size outside 1..10000",
    "PJ008": "schedule_info not an object / bad cron rule or field / bad start, end, backfill",
    "PJ010": "unknown time zone in schedule_info",
    "PJ011": "schedule end before its start",
    "PJ014": "set_setting: unknown setting or bad value",
    "PJ017": "timeout not positive",
    "PJ021": "unknown job_key_mode",
    "PJ022": "origin empty or longer than 256 characters",
    "PJ031": "task identifier with control / invisible characters or edge whitespace",
    "PJ032": "queue name with control / invisible characters or edge whitespace",
    "PJ033": "payload larger than max_payload_bytes",
    "PJ034": "run_at (tick: as_of) before 1970, more than 100 years ahead, or infinite",
    "PJ035": "max_attempts above 10000",
    "PJ036": "worker_id with control / invisible characters or edge whitespace",
    "PJ037": "payload nesting arrays and objects more than 256 deep",
    "PJ038": "timeout longer than 100 years",
    "PJ040": "job_expiry not positive, or longer than 100 years",
    "PJ042": "a schedule that can never fire (impossible date, end already past)",
    # PostgreSQL's input functions, before pgjobs sees the value.
    "22P02": "invalid_text_representation: not JSON, not an integer",
    "22007": "invalid_datetime_format: not a timestamp or interval",
    "22008": "datetime_field_overflow: timestamp or interval out of range",
    "22015": "interval_field_overflow: interval out of range",
    "22003": "numeric_value_out_of_range: integer beyond int4 / int8",
    "22021": "character_not_in_repertoire: a NUL byte in text",
    "22P05": "untranslatable_character: \\u0000 in JSON that becomes jsonb (schedule_info)",
    "54001": "statement_too_complex: JSON nested deeper than the parser's stack allows",
}

EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

# Strings meant to break out of a quoted literal, a format() or a prepared statement.
EVIL = [
    "'); DROP TABLE app_jobs.jobs; --",
    "%I",
    "%s %L %%",
    "$1",
    "$$; DROP TABLE app_jobs.jobs; $$",
    "' OR '1'='1",
    "\\'; SELECT pg_sleep(10); --",
    '"; DELETE FROM app_jobs.settings; --',
    "E'\\x27'::text",
    "{{x}} ${x} :'x'",
]
# Names as real code uses them: all must stay valid.
NAMES = ["send_email", "tasks.py", "tasks.send-email:v2", "qa", "Send email", "tâche_日本"]
# One of each character name_problem refuses, and edge whitespace.
BAD_NAME_CHARS = [
    "\t", "\n", "\r", "\x00", "\x01", "\x1b", "\x7f", "\x85", "\u200b", "\u200e", "\u202e",
    "\u2028", "\u2066", "\ufeff",
]

def mostly(valid: st.SearchStrategy, fuzz: st.SearchStrategy) -> st.SearchStrategy:
    """valid about 5 times in 6, else fuzz: with a handful of arguments per call, most
    calls still get through validation, and the paths behind it are exercised too.
    (Hypothesis shrinks towards the first branch: failures shrink towards valid values.)"""
    return st.integers(min_value=0, max_value=5).flatmap(lambda i: fuzz if i == 5 else valid)


# The documented name rule (README): no control or invisible character anywhere, no
# whitespace at either end.
NAME_FORBIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060\u2066-\u2069\ufeff]"
)
EDGE_SPACES = "[ \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]"
NAME_EDGE_SPACE = re.compile(f"^{EDGE_SPACES}|{EDGE_SPACES}$")


def documented_name_ok(name: str) -> bool:
    return not NAME_FORBIDDEN.search(name) and not NAME_EDGE_SPACE.search(name)


# Text pgjobs accepts as a name: printable (no control, format or separator character), no
# whitespace at either end (Python's strip() knows the same whitespace).
name_chars = st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Zl", "Zp", "Cs"))
clean_name = st.text(name_chars, min_size=1, max_size=30).filter(lambda t: t == t.strip())
valid_name = st.one_of(st.sampled_from(NAMES + EVIL), clean_name)
special_text = st.sampled_from(
    EVIL + NAMES + ["", " ", "x", "a b", " x", "x ", "\u3000x", "x\u00a0", "NULL", "null"]
)
any_text = st.text(max_size=40)
long_text = st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "😀", "\x00"]),
                      st.sampled_from([125, 126, 127, 256, 257, 512, 513, 5000, 300_000]))
name_with_bad_char = st.builds(
    lambda a, c, b: a + c + b, st.sampled_from(["", "a", "task"]),
    st.sampled_from(BAD_NAME_CHARS), st.sampled_from(["", "b", "_x"]),
)
fuzz_text = st.one_of(
    st.none(), special_text, any_text, long_text, name_with_bad_char,
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=10),
)
name_value = mostly(valid_name, fuzz_text)
optional_name = mostly(st.one_of(st.none(), valid_name), fuzz_text)
no_nul_text = st.text(max_size=60).map(lambda t: t.replace("\x00", ""))
free_text = mostly(st.one_of(st.none(), no_nul_text.filter(bool)), fuzz_text)

int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
fuzz_int = st.one_of(
    st.none(),
    st.sampled_from([0, -1, 10_001, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63), 2**63, 10**30]),
    st.integers(min_value=-5, max_value=30),
    int32,
    st.integers(),
)
max_attempts_value = mostly(st.one_of(st.none(), st.integers(min_value=1, max_value=10_000),
                                      st.sampled_from([1, 10_000])), fuzz_int)
priority_value = mostly(st.one_of(st.none(), st.integers(-10, 10), int32), fuzz_int)
batch_size_value = mostly(st.integers(min_value=1, max_value=10_000), fuzz_int)

fuzz_timestamp = st.one_of(
    st.none(),
    st.sampled_from([
        "infinity", "-infinity", "epoch", "now", "today", "tomorrow", "yesterday",
        "1970-01-01 00:00:00+00", "1969-12-31 23:59:59.999999+00", "2000-02-29 12:00+05:30",
        "4713-01-01 00:00:00+00 BC", "294276-12-31 23:59:59+00", "294277-01-01 00:00:00+00",
        "5874897-12-31", "2020-13-01", "2021-02-30", "", "x", "$1", "'); DROP TABLE x; --",
    ]),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    # ("now", d): now() plus d days, computed by the server.
    st.integers(min_value=-100_000, max_value=100_000).map(lambda d: ("now", d)),
    any_text,
)
timestamp_value = mostly(
    st.one_of(
        st.none(),
        st.floats(min_value=-20_000, max_value=36_000).map(lambda d: ("now", d)),
        st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1),
                     timezones=st.timezones()).map(lambda d: d.isoformat()),
    ),
    fuzz_timestamp,
)
fuzz_interval = st.one_of(
    st.none(),
    st.sampled_from([
        "0", "-1 second", "1 microsecond", "4 hours", "1 day", "100 years", "178000000 years",
        "178000001 years", "-178000000 years", "2147483647 days", "2147483648 days",
        "999999999999 hours", "P1Y2M", "@ 1 hour ago", "", "infinity", "x", "$1",
    ]),
    st.timedeltas(min_value=timedelta(days=-10**6), max_value=timedelta(days=10**6)).map(
        lambda t: f"{t.total_seconds()} seconds"
    ),
    any_text,
)
interval_value = mostly(
    st.one_of(st.none(), st.timedeltas(min_value=timedelta(microseconds=1),
                                       max_value=timedelta(days=3650))
              .map(lambda t: f"{t.total_seconds()} seconds")),
    fuzz_interval,
)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=10), children, max_size=5),
    ),
    max_leaves=30,
)


def deep(n: int) -> str:
    return "[" * n + "]" * n


fuzz_json = st.one_of(
    st.sampled_from([
        "", "{", "[1,", "NaN", "Infinity", "{'a': 1}", '{"a": "\\u0000"}', '"\\ud800"',
        '{"a": 1, "a": 2}', "null", '"x"', "1e400", "-0", deep(256), deep(257), deep(1000),
        deep(100_000), '{"a": ' + deep(1000) + ', "a": 1}',
        '{"n": 1e999999, "a": [' + "[1], " * 300 + "[1]]}",
        json.dumps({"x": "x" * 262_134}), json.dumps({"x": "x" * 262_135}),
        json.dumps({"x": "é" * 200_000}), '{"a": "' + "'); DROP TABLE app_jobs.jobs; --" + '"}',
    ]),
    any_text,
)
json_text = mostly(
    st.one_of(
        st.none(),
        json_values.map(json.dumps),
        json_values.map(lambda v: json.dumps(v, ensure_ascii=False)),
    ),
    fuzz_json,
)


class Call:
    """Builds a call: each value goes in as a parameter, text as UTF-8 bytes."""

    def __init__(self) -> None:
        self.params: list[object] = []

    def text(self, value: str | None) -> str:
        if value is None:
            return "NULL::text"
        self.params.append(value.encode("utf-8"))
        return "convert_from(%s::bytea, 'UTF8')"

    def cast(self, value: object, type_: str) -> str:
        """A value of type_: text is cast by the server, ("now", d) is now() + d days."""
        if value is None:
            return f"NULL::{type_}"
        if isinstance(value, tuple):
            self.params.append(f"{value[1]} days")
            return f"(now() + %s::interval)::{type_}"
        if isinstance(value, str):
            return f"({self.text(value)})::{type_}"
        self.params.append(value)
        return f"%s::{type_}"

    def text_array(self, values: list[str] | None) -> str:
        if values is None:
            return "NULL::text[]"
        self.params.append([v.encode("utf-8") for v in values])
        return "ARRAY(SELECT convert_from(t, 'UTF8') FROM unnest(%s::bytea[]) AS t)"


def run(conn: psycopg.Connection, what: str, sql: str, params: list[object]) -> list[tuple] | str:
    """The rows of a statement, or the SQLSTATE it raised (which must be allowed).

    Outcomes are counted as Hypothesis events: pytest --hypothesis-show-statistics."""
    try:
        with conn.cursor() as cur:
            cur.execute("SAVEPOINT call")
            cur.execute(sql, params)
            rows = cur.fetchall() if cur.description else []
            cur.execute("RELEASE SAVEPOINT call")
            event(f"{what}: ok")
            return rows
    except psycopg.Error as exc:
        event(f"{what}: {exc.sqlstate}")
        assert exc.sqlstate in ALLOWED, (
            f"unexpected SQLSTATE {exc.sqlstate}: {exc}\nSQL: {sql}\nparams: "
            f"{[p[:200] if isinstance(p, bytes | str) else p for p in params]!r}"
        )
        conn.execute("ROLLBACK TO SAVEPOINT call")
        return exc.sqlstate


INVARIANTS = """
SELECT problem FROM (
    SELECT 'queue ' || q.queue_name || ' counts ' || q.job_count || ' jobs, has ' || count(j.id)
    FROM app_jobs.job_queues AS q LEFT JOIN app_jobs.jobs AS j ON j.queue_name = q.queue_name
    GROUP BY q.queue_name, q.job_count HAVING q.job_count <> count(j.id)
    UNION ALL
    SELECT 'queue ' || q.queue_name || ' counts ' || q.running_count || ' running, has '
        || count(j.id)
    FROM app_jobs.job_queues AS q
    LEFT JOIN app_jobs.jobs AS j ON j.queue_name = q.queue_name AND j.locked_at IS NOT NULL
    GROUP BY q.queue_name, q.running_count HAVING q.running_count <> count(j.id)
    UNION ALL
    SELECT 'job ' || j.id || ' has no queue row' FROM app_jobs.jobs AS j
    WHERE j.queue_name IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM app_jobs.job_queues AS q WHERE q.queue_name = j.queue_name)
    UNION ALL
    SELECT 'job ' || j.id || ' attempts ' || j.attempts || ' > max ' || j.max_attempts
    FROM app_jobs.jobs AS j WHERE j.attempts > j.max_attempts OR j.attempts < 0
    UNION ALL
    SELECT 'job ' || j.id || ' locked_at / locked_by disagree' FROM app_jobs.jobs AS j
    WHERE (j.locked_at IS NULL) <> (j.locked_by IS NULL)
    UNION ALL
    SELECT 'job ' || j.id || ' max_attempts ' || j.max_attempts FROM app_jobs.jobs AS j
    WHERE j.max_attempts NOT BETWEEN 1 AND 10000
    UNION ALL
    SELECT 'job ' || j.id || ' bad name: ' || coalesce(app_jobs._name_problem(j.task_identifier),
        app_jobs._name_problem(j.queue_name), app_jobs._name_problem(j.locked_by))
    FROM app_jobs.jobs AS j
    WHERE coalesce(app_jobs._name_problem(j.task_identifier), app_jobs._name_problem(j.queue_name),
        app_jobs._name_problem(j.locked_by)) IS NOT NULL
    UNION ALL
    SELECT 'job ' || j.id || ' payload of ' || octet_length(j.payload::text) || ' bytes'
    FROM app_jobs.jobs AS j
    WHERE octet_length(j.payload::text) > app_jobs.setting('max_payload_bytes')::integer
    UNION ALL
    SELECT 'job ' || j.id || ' run_at ' || j.run_at FROM app_jobs.jobs AS j
    WHERE NOT isfinite(j.run_at) OR j.run_at < '1970-01-01 00:00+00'
    UNION ALL
    SELECT 'schedule ' || s.id || ' bad name' FROM app_jobs.scheduled_jobs AS s
    WHERE coalesce(app_jobs._name_problem(s.task_identifier), app_jobs._name_problem(s.queue_name))
        IS NOT NULL OR s.max_attempts NOT BETWEEN 1 AND 10000
        OR octet_length(s.payload::text) > app_jobs.setting('max_payload_bytes')::integer
    UNION ALL
    SELECT 'table ' || t || ' is gone' FROM unnest(ARRAY[
        'app_jobs.jobs', 'app_jobs.job_queues', 'app_jobs.scheduled_jobs', 'app_jobs.settings',
        'app_jobs.job_history'
    ]) AS t WHERE to_regclass(t) IS NULL
) AS p (problem)
"""


def check_invariants(conn: psycopg.Connection) -> None:
    problems = [r[0] for r in conn.execute(INVARIANTS).fetchall()]
    assert not problems, problems


@pytest.fixture
def conn(db: psycopg.Connection) -> psycopg.Connection:
    """A transactional session on a database holding a few committed jobs."""
    db.autocommit = True
    db.execute("""
        SELECT app_jobs.add_job(identifier := 'send_email', job_key := 'k1', queue_name := 'qa');
        SELECT app_jobs.add_job(identifier := 'send_email', job_key := 'k2');
        SELECT app_jobs.add_job(identifier := 'tasks.py', queue_name := 'qa', priority := -5);
        SELECT app_jobs.add_job(identifier := 'running', queue_name := 'qb');
        SELECT app_jobs.get_job('w1', ARRAY['running']);
        SELECT app_jobs.add_job(identifier := 'dead', max_attempts := 1);
        SELECT app_jobs.get_job('w1', ARRAY['dead']);
        SELECT app_jobs.fail_job('w1', id) FROM app_jobs.jobs WHERE task_identifier = 'dead';
        SELECT app_jobs.add_scheduled_job(identifier := 'nightly',
            schedule_info := '{"rule": "0 3 * * *"}', job_key := 's1');
    """)
    check_invariants(db)
    # A call that runs away fails the test (57014 is not allowed) instead of hanging it.
    db.execute("SET statement_timeout = '20s'")
    db.autocommit = False
    yield db
    db.rollback()


def add_job_call(identifier, payload, job_key, queue_name, run_at, max_attempts, priority,
                 timeout, job_key_mode, origin) -> tuple[str, list[object]]:
    c = Call()
    args = ", ".join([
        f"identifier := {c.text(identifier)}",
        f"payload := {c.cast(payload, 'json')}",
        f"job_key := {c.text(job_key)}",
        f"queue_name := {c.text(queue_name)}",
        f"run_at := {c.cast(run_at, 'timestamptz')}",
        f"max_attempts := {c.cast(max_attempts, 'integer')}",
        f"priority := {c.cast(priority, 'integer')}",
        f"timeout := {c.cast(timeout, 'interval')}",
        f"job_key_mode := {c.text(job_key_mode)}",
        f"origin := {c.text(origin)}",
    ])
    return f"SELECT (j).* FROM (SELECT app_jobs.add_job({args}) AS j) AS x", c.params


@EXAMPLES
@given(
    identifier=name_value,
    payload=json_text,
    job_key=mostly(st.sampled_from(["k1", "k2", None, None, "k3"]), fuzz_text),
    queue_name=mostly(st.one_of(st.sampled_from(["qa", "qb", None]), valid_name), fuzz_text),
    run_at=timestamp_value,
    max_attempts=max_attempts_value,
    priority=priority_value,
    timeout=interval_value,
    job_key_mode=mostly(
        st.sampled_from([None, "replace", "preserve_run_at", "unsafe_dedupe"]), fuzz_text
    ),
    origin=mostly(st.one_of(st.none(), st.sampled_from(EVIL), clean_name), fuzz_text),
)
def test_add_job_any_input(conn, identifier, payload, job_key, queue_name, run_at,
                           max_attempts, priority, timeout, job_key_mode, origin):
    sql, params = add_job_call(identifier, payload, job_key, queue_name, run_at,
                               max_attempts, priority, timeout, job_key_mode, origin)
    try:
        rows = run(conn, "add_job", sql, params)
        if not isinstance(rows, str):
            (row,) = rows
            cols = [d.name for d in conn.execute("SELECT * FROM app_jobs.jobs LIMIT 0").description]
            job = dict(zip(cols, row, strict=True))
            # unsafe_dedupe hands back whatever job already holds the key.
            if job["id"] is not None and not (job_key_mode == "unsafe_dedupe" and job_key):
                assert (job["task_identifier"], job["queue_name"], job["key"], job["origin"]) \
                    == (identifier, queue_name, job_key, origin)
                assert job["max_attempts"] == (max_attempts or 25)
                stored = conn.execute(
                    "SELECT payload::text FROM app_jobs.jobs WHERE id = %s", (job["id"],)
                ).fetchone()[0]
                assert stored == (payload if payload is not None else "{}"), \
                    "payload not stored verbatim"
        check_invariants(conn)
    finally:
        conn.rollback()


@EXAMPLES
@given(
    worker_id=mostly(st.sampled_from(["w1", "w2", "w2", "worker 3: eu"]), name_value),
    task_identifiers=mostly(
        st.one_of(st.none(), st.lists(st.sampled_from(["send_email", "tasks.py", "running"]),
                                      max_size=3)),
        st.lists(st.one_of(valid_name, any_text), max_size=4).map(
            lambda xs: [x.replace("\x00", "") for x in xs]),
    ),
    job_expiry=interval_value,
    batch_size=batch_size_value,
    single=st.booleans(),
    outcomes=st.lists(
        st.tuples(
            st.sampled_from(["complete", "fail", "cancel"]),
            mostly(st.sampled_from(["claimed", "claimed", "other"]), fuzz_int),
            mostly(st.sampled_from(["same", "same", "w1"]), name_value),
            free_text,
        ),
        max_size=4,
    ),
)
def test_claim_and_finish_any_input(conn, worker_id, task_identifiers, job_expiry, batch_size,
                                    single, outcomes):
    try:
        c = Call()
        if single:
            sql = (f"SELECT (j).id FROM (SELECT app_jobs.get_job({c.text(worker_id)}, "
                   f"{c.text_array(task_identifiers)}, {c.cast(job_expiry, 'interval')}) AS j)"
                   " AS x WHERE (j).id IS NOT NULL")
        else:
            sql = (f"SELECT id FROM app_jobs.get_jobs({c.text(worker_id)}, "
                   f"{c.text_array(task_identifiers)}, {c.cast(job_expiry, 'interval')}, "
                   f"{c.cast(batch_size, 'integer')})")
        rows = run(conn, "get_job" if single else "get_jobs", sql, c.params)
        claimed = [] if isinstance(rows, str) else [r[0] for r in rows]
        if claimed:
            event("claimed a job")
            holders = conn.execute(
                "SELECT DISTINCT locked_by FROM app_jobs.jobs WHERE id = ANY(%s)", (claimed,)
            ).fetchall()
            assert holders == [(worker_id,)]
        check_invariants(conn)

        other = conn.execute("SELECT min(id) FROM app_jobs.jobs").fetchone()[0]
        for action, job, worker, message in outcomes:
            job_id = {"claimed": claimed[-1] if claimed else None, "other": other}.get(job, job)
            worker = worker_id if worker == "same" else worker
            c = Call()
            if action == "complete":
                sql = (f"SELECT (j).id FROM (SELECT app_jobs.complete_job({c.text(worker)}, "
                       f"{c.cast(job_id, 'bigint')}) AS j) AS x")
            elif action == "fail":
                sql = (f"SELECT (j).id, (j).last_error FROM (SELECT app_jobs.fail_job("
                       f"{c.text(worker)}, {c.cast(job_id, 'bigint')}, {c.text(message)}) AS j)"
                       " AS x")
            else:
                sql = f"SELECT app_jobs.cancel_job({c.cast(job_id, 'bigint')})"
            rows = run(conn, action, sql, c.params)
            if not isinstance(rows, str) and rows[0][0] is not None:
                event(f"{action}: took effect")
                if action == "fail":
                    # (A job whose cancellation was asked for ends cancelled.)
                    assert rows[0][1] == message or (message, rows[0][1]) == (None, "cancelled")
            check_invariants(conn)
    finally:
        conn.rollback()


valid_cron_field = st.sampled_from(["*", "*/5", "0", "1-5", "0,30", "*/15", "10-40/10"])
fuzz_cron_field = st.one_of(
    st.sampled_from(["59", "60", "5-1", "*/0", "jan", "mon-fri", "L", "?", "", "-1",
                     "99999999999", "'); DROP TABLE x; --", "%I", "$1"]),
    st.text(alphabet="0123456789*/-,", max_size=6),
)
fuzz_schedule_value = st.one_of(
    st.sampled_from(["Mars/Olympus", "EST5EDT", "+02", "<+03>-3", "infinity", "-infinity",
                     "1970-01-01", "2999-01-01", "1 day", "-1 day", "178000000 years",
                     "\u0000", "$1", "' OR '1'='1"]),
    fuzz_text.filter(lambda v: v is not None), st.integers(), st.none(),
)
schedule_extras = st.fixed_dictionaries({}, optional={
    "tz": mostly(st.sampled_from(["UTC", "Europe/Berlin", "Asia/Tokyo", "Etc/GMT+5"]),
                 fuzz_schedule_value),
    "start": mostly(st.sampled_from(["2020-01-01T00:00:00Z", "2030-06-01 12:00+02"]),
                    fuzz_schedule_value),
    "end": mostly(st.sampled_from(["2099-01-01T00:00:00Z", "2031-01-01"]),
                  fuzz_schedule_value),
    "backfill": mostly(st.sampled_from(["10 minutes", "1 day", "0"]), fuzz_schedule_value),
})
schedule_info = mostly(
    st.one_of(
        st.builds(lambda fields, extra: json.dumps({"rule": " ".join(fields), **extra}),
                  st.lists(valid_cron_field, min_size=5, max_size=5), schedule_extras),
        st.builds(lambda rule, extra: json.dumps({"rule": rule, **extra}),
                  st.sampled_from(["@daily", "@hourly", "@yearly", "@weekly"]), schedule_extras),
        st.builds(lambda fields, extra: json.dumps({**fields, **extra}),
                  st.fixed_dictionaries({}, optional={
                      "minute": st.lists(st.integers(0, 59), min_size=1, max_size=3),
                      "hour": st.lists(st.integers(0, 23), min_size=1, max_size=3),
                      "dayOfWeek": st.lists(st.integers(0, 7), min_size=1, max_size=3),
                  }), schedule_extras),
    ),
    st.one_of(
        st.none(),
        st.builds(lambda fields, extra: json.dumps({"rule": " ".join(fields), **extra}),
                  st.lists(mostly(valid_cron_field, fuzz_cron_field), min_size=4, max_size=6),
                  schedule_extras),
        st.sampled_from(["@reboot", "@nonsense", ""]).map(lambda r: json.dumps({"rule": r})),
        st.dictionaries(
            st.sampled_from(["minute", "hour", "dayOfMonth", "month", "dayOfWeek"]),
            st.one_of(st.lists(st.integers(min_value=-2, max_value=70), max_size=4),
                      json_scalars),
            max_size=5,
        ).map(json.dumps),
        json_values.map(json.dumps),
        fuzz_json,
    ),
)


@EXAMPLES
@given(
    identifier=name_value,
    payload=json_text,
    info=schedule_info,
    job_key=mostly(st.sampled_from(["s1", None, None, "s2"]), fuzz_text),
    queue_name=optional_name,
    max_attempts=max_attempts_value,
    priority=priority_value,
    after=timestamp_value,
    # The tick enqueues every due slot (all of them within a backfill window): as_of stays
    # within hours of now, or is out of range altogether (PJ034).
    as_of=mostly(
        st.one_of(st.none(), st.floats(min_value=-2, max_value=0.1).map(lambda d: ("now", d))),
        st.sampled_from(["infinity", "-infinity", "1969-12-31 23:59+00", "9999-01-01",
                         "294277-01-01", "x"]),
    ),
)
def test_schedules_any_input(conn, identifier, payload, info, job_key, queue_name,
                             max_attempts, priority, after, as_of):
    try:
        c = Call()
        sql = ("SELECT (s).id FROM (SELECT app_jobs.add_scheduled_job("
               f"identifier := {c.text(identifier)}, payload := {c.cast(payload, 'json')}, "
               f"schedule_info := {c.cast(info, 'json')}, job_key := {c.text(job_key)}, "
               f"queue_name := {c.text(queue_name)}, "
               f"max_attempts := {c.cast(max_attempts, 'integer')}, "
               f"priority := {c.cast(priority, 'integer')}) AS s) AS x")
        rows = run(conn, "add_scheduled_job", sql, c.params)
        check_invariants(conn)
        if not isinstance(rows, str):
            (schedule_id,) = rows[0]
            stored = conn.execute(
                "SELECT task_identifier, key, queue_name, max_attempts FROM "
                "app_jobs.scheduled_jobs WHERE id = %s", (schedule_id,),
            ).fetchone()
            assert stored == (identifier, job_key, queue_name, max_attempts or 25)
            run(conn, "run_scheduled_job",
                f"SELECT (app_jobs.run_scheduled_job({schedule_id})).id", [])
            check_invariants(conn)
            # Make it due, then tick.
            conn.execute("UPDATE app_jobs.scheduled_jobs SET next_run_at = now() - interval "
                         "'1 minute' WHERE id = %s AND next_run_at IS NOT NULL", (schedule_id,))
            c = Call()
            run(conn, "run_due_scheduled_jobs", "SELECT id FROM app_jobs.run_due_scheduled_jobs("
                f"coalesce({c.cast(as_of, 'timestamptz')}, now()))", c.params)
            check_invariants(conn)
        c = Call()
        # (As text: a slot before year 1 or after 9999 is fine for PostgreSQL, not for
        # Python's datetime.)
        run(conn, "schedule_next_run", f"SELECT app_jobs.schedule_next_run("
            f"{c.cast(info, 'json')}, {c.cast(after, 'timestamptz')})::text", c.params)
    finally:
        conn.rollback()


@EXAMPLES
@given(
    name=mostly(st.sampled_from(["max_payload_bytes"] * 3 + ["history", "history_retention"]),
                fuzz_text),
    value=st.one_of(
        st.integers(min_value=-10, max_value=2**40).map(str),
        st.sampled_from(["1024", "1023", "262144", "1073741824", "1073741825", " 4096 ",
                         "+2048", "2e3", "0x800", "on", "off", "OFF", "7 days", "-1 day",
                         "$1", "%I"]),
        fuzz_text,
    ),
    payload_bytes=st.sampled_from([2, 1024, 1025, 4096, 4097, 262_144, 262_145, 300_000]),
)
def test_settings_any_input(conn, name, value, payload_bytes):
    try:
        c = Call()
        rows = run(conn, "set_setting",
                   f"SELECT app_jobs.set_setting({c.text(name)}, {c.text(value)})", c.params)
        if not isinstance(rows, str):
            assert rows[0][0] == conn.execute(
                "SELECT app_jobs.setting(%s)", (name,)
            ).fetchone()[0]
        cap = int(conn.execute("SELECT app_jobs.setting('max_payload_bytes')").fetchone()[0])
        assert 1024 <= cap <= 1073741824
        payload = json.dumps("x" * (payload_bytes - 2))
        result = run(conn, "add_job",
                     "SELECT (app_jobs.add_job(identifier := 'p', payload := %s::json)).id",
                     [payload])
        assert (result == "PJ033") == (payload_bytes > cap), (payload_bytes, cap, result)
        check_invariants(conn)
    finally:
        conn.rollback()


@EXAMPLES
@given(
    name=st.one_of(
        st.text(max_size=12),
        st.builds(lambda a, c, b: a + c + b, no_nul_text, st.sampled_from(BAD_NAME_CHARS[:3]
                  + BAD_NAME_CHARS[4:] + [" ", "\u00a0", "\u3000", "\u2009"]), no_nul_text),
        clean_name,
    ).map(lambda t: t.replace("\x00", "")).filter(lambda t: 1 <= len(t) <= 126),
)
def test_name_rule_is_the_documented_one(conn, name):
    """name_problem, add_job (identifier, queue) and get_job (worker_id) accept exactly the
    names the documented rule allows."""
    try:
        ok = documented_name_ok(name)
        event(f"documented rule: {'ok' if ok else 'refused'}")
        problem = conn.execute("SELECT app_jobs._name_problem(%s)", (name,)).fetchone()[0]
        assert (problem is None) == ok, (name, problem)
        c = Call()
        result = run(conn, "add_job", "SELECT (app_jobs.add_job(identifier := "
                     f"{c.text(name)}, queue_name := {c.text(name)})).id", c.params)
        outcome = result if isinstance(result, str) else "ok"
        assert outcome == ("ok" if ok else "PJ031"), (name, result)
        c = Call()
        result = run(conn, "get_job", f"SELECT (app_jobs.get_job({c.text(name)})).id", c.params)
        assert (result != "PJ036") == ok, (name, result)
    finally:
        conn.rollback()
