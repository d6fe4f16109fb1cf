"""pgjobs behind a real PgBouncer 1.18 (no prepared-statement support), in transaction mode
unless said: three workers with a direct LISTEN URL run 1,500 pooled enqueues exactly once
with pickup under 100 ms; a worker with only the pooler URL polls, warns once and says
'silent'; --no-listen says 'poll'; no worker setting, LISTEN or ignore_enqueues switch is
seen by another client of the pool; cancel, cron and SIGTERM through the pooler; enqueue
from psql, a trigger, psycopg and node-postgres in both modes; a full session-mode pool
makes a worker log "waited ... for a database connection" and it starts once a server is
free; the `pgjobs` command through the pooler.

PgBouncer comes from conftest.py (pooler.py): `pgbouncer_transaction` (pool 20),
`pgbouncer_session` (pool 4), both shared by the whole run, each test on its own database
(a pool per database). `pgbouncer_round_robin` here adds `server_round_robin = 1`: every
transaction goes to the server that has been idle longest, so consecutive transactions of
one client land on different server connections, as they do on a busy pool. That makes
the failures this file guards against (a prepared statement that does not exist on the
next server, a LISTEN left behind on a pooled server) happen every time, not by chance.

Handlers write a claim log (faults.py: `job attempt pid start|end monotonic`), so runs are
counted outside the database and pickup latency is measured as handler start minus the
moment the enqueuing statement was sent (both CLOCK_MONOTONIC). Figures are printed with
`pytest -s` ([pooler] lines).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pgjobs
import psycopg
import pytest
from faults import WorkerProc, read_claims, report, wait_for, write_tasks
from pgjobs import testing
from pooler import MISSING, PgBouncer, find_pgbouncer, free_port
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PGJOBS = str(Path(sys.executable).parent / "pgjobs")

SILENT_WARNING = "notifications do not arrive on the LISTEN connection"
WAITED = "for a database connection"

TASKS = """
@pgjobs.task
async def note(payload, job):
    claim_log(job, "start")
    claim_log(job, "end")


@pgjobs.task
async def tick(payload, job):
    claim_log(job, "start")
    claim_log(job, "end")


@pgjobs.task
async def nap(payload, job):
    claim_log(job, "start")
    try:
        await asyncio.sleep(payload.get("seconds", 30))
    finally:
        claim_log(job, "end")
"""


# -- helpers -----------------------------------------------------------------------------------

class RoundRobinPgBouncer(PgBouncer):
    """server_round_robin = 1: each transaction gets the server idle the longest."""

    def _write_config(self) -> Path:
        ini = super()._write_config()
        ini.write_text(ini.read_text() + "server_round_robin = 1\n")
        return ini


@pytest.fixture(scope="module")
def pgbouncer_round_robin() -> Iterator[PgBouncer]:
    """A transaction-mode PgBouncer (pool 20) that spreads one client's transactions over
    all its server connections (for this module)."""
    binary = find_pgbouncer()
    if binary is None:
        pytest.skip(MISSING)
    bouncer = RoundRobinPgBouncer(
        binary, "transaction", 20,
        os.environ.get("PGHOST") or "127.0.0.1", int(os.environ.get("PGPORT") or 5432),
        os.environ.get("PGUSER", "postgres"))
    try:
        yield bouncer.start()
    finally:
        bouncer.stop()


def pooled(url: str) -> psycopg.Connection:
    """An autocommit client that never prepares (what works on any pooler)."""
    return psycopg.connect(url, autocommit=True, prepare_threshold=None)


def dbname(conninfo: str) -> str:
    return conninfo_to_dict(conninfo)["dbname"]


def plain(conninfo: str) -> str:
    """Only host, port, user and dbname (psql's libpq may not know psycopg's newer
    options, such as sslcertmode)."""
    params = conninfo_to_dict(conninfo)
    return make_conninfo(**{k: params[k] for k in ("host", "port", "user", "dbname")})


def add_job(conn: psycopg.Connection, task: str, payload: str = "{}") -> int:
    return conn.execute("SELECT id FROM app_jobs.add_job(identifier := %s, payload := %s::json)",
                        (task, payload)).fetchone()[0]


def warm(url: str, n: int) -> None:
    """Make the pool open n server connections (n clients in a transaction at once)."""
    conns = [pooled(url) for _ in range(n)]
    try:
        for conn in conns:
            conn.execute("BEGIN")
            conn.execute("SELECT 1")
        for conn in conns:
            conn.execute("COMMIT")
    finally:
        for conn in conns:
            conn.close()


class ClaimLog:
    """The claim log read incrementally: first start and end time per job."""

    def __init__(self, path: Path) -> None:
        self.path, self._pos = path, 0
        self.starts: dict[int, float] = {}
        self.ends: dict[int, float] = {}

    def refresh(self) -> ClaimLog:
        if self.path.exists():
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
            cut = data.rfind(b"\n") + 1
            self._pos += cut
            for line in data[:cut].decode().splitlines():
                job_id, _, _, event, at = line.split()
                (self.starts if event == "start" else self.ends).setdefault(int(job_id),
                                                                            float(at))
        return self

    def start_of(self, job_id: int) -> float | None:
        return self.refresh().starts.get(job_id)

    def end_of(self, job_id: int) -> float | None:
        return self.refresh().ends.get(job_id)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., WorkerProc]]:
    """spawn(url, tasks, worker_id, *options): a pgjobs-worker (log in tmp_path), killed at
    teardown if still running."""
    procs: list[WorkerProc] = []

    def _spawn(url: str, tasks: Path, worker_id: str, *extra: str) -> WorkerProc:
        w = WorkerProc(url, tasks, tmp_path, worker_id, *extra)
        procs.append(w)
        return w

    yield _spawn
    for w in procs:
        w.cleanup()


def alive(*workers: WorkerProc) -> None:
    for w in workers:
        assert w.alive(), (f"worker {w.worker_id} exited with {w.proc.returncode}:\n"
                           f"{w.log_text()[-3000:]}")


def registered(sql, *workers: WorkerProc, timeout: float = 20) -> dict[str, str]:
    """Wait until every worker is registered with its wakeup set; {worker id: wakeup}."""
    ids = [w.worker_id for w in workers]

    def ready():
        alive(*workers)
        rows = dict(sql("SELECT id, wakeup FROM app_jobs.workers WHERE id = ANY(%s)", (ids,)))
        return rows if len(rows) == len(ids) and all(rows.values()) else None

    return wait_for(ready, timeout, f"workers {ids} to register and probe LISTEN")


def wait_done(sql, n: int, workers: list[WorkerProc], timeout: float) -> None:
    """Until n jobs are in job_history and app_jobs.jobs is empty (workers must live)."""
    def done():
        alive(*workers)
        return sql("SELECT (SELECT count(*) FROM app_jobs.job_history) = %s "
                   "AND NOT EXISTS (SELECT FROM app_jobs.jobs)", (n,))[0][0]

    wait_for(done, timeout, f"{n} jobs to be done", step=0.1)


def assert_each_ran_once(log: Path, sql, ids: set[int]) -> None:
    claims = read_claims(log)
    ran = [c.job_id for c in claims]
    twice = sorted({j for j in ran if ran.count(j) > 1}) if len(ran) != len(set(ran)) else []
    assert not twice, f"jobs run more than once: {twice[:20]}"
    assert set(ran) == ids, (f"{len(ids - set(ran))} never ran, "
                             f"{len(set(ran) - ids)} unexpected")
    assert all(c.end is not None for c in claims)
    rows = sql("SELECT count(*), count(DISTINCT job_id), "
               "count(*) FILTER (WHERE status = 'completed') FROM app_jobs.job_history "
               "WHERE job_id = ANY(%s)", (sorted(ids),))
    assert rows == [(len(ids), len(ids), len(ids))]


def pickup_latencies(url: str, log: ClaimLog, n: int, timeout: float,
                     jitter: float = 0.05) -> list[float]:
    """Enqueue n single jobs one at a time through `url`, each a random 0-`jitter` s after
    the last one started (so that a polling worker is met at any point of its interval):
    the seconds from sending add_job to its handler's start."""
    out = []
    with pooled(url) as conn:
        for _ in range(n):
            time.sleep(random.uniform(0, jitter))
            sent = time.monotonic()
            job_id = add_job(conn, "note")
            started = wait_for(lambda j=job_id: log.start_of(j), timeout,
                               f"job {job_id} to start", step=0.002)
            out.append(started - sent)
    return out


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}ms"


def pgjobs_cmd(url: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([PGJOBS, "--database-url", url, *args], capture_output=True,
                          text=True, timeout=timeout)


def listen_ok(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("pgjobs_worker_listen_ok "):
                return float(line.split()[1])
    raise AssertionError("no pgjobs_worker_listen_ok in /metrics")


def metrics_up(port: int, worker: WorkerProc) -> float:
    def attempt():
        alive(worker)
        try:
            return (listen_ok(port),)
        except OSError:
            return None

    return wait_for(attempt, 15, "the metrics endpoint")[0]


# -- (1) three workers, direct LISTEN ---------------------------------------------------------

N_JOBS = 1500
N_ENQUEUERS = 3
N_SAMPLES = 30


def test_three_workers_direct_listen_run_pooled_enqueues_once_and_fast(
        pgbouncer_transaction, conninfo, sql, tmp_path, spawn):
    """3 workers on the transaction pooler with --listen-database-url straight to
    PostgreSQL: 1,500 jobs enqueued through the pooler by 3 clients at once each run
    exactly once (claim log and job_history); every worker stays up, registered, wakeup
    'listen' (metrics listen_ok 1); pickup at idle through the pooler p50 < 100 ms (the
    poll interval is 2 s: only notifications are that fast); SIGTERM: exit 0,
    unregistered."""
    url = pgbouncer_transaction.url_for(conninfo)
    log = tmp_path / "claims"
    tasks = write_tasks(tmp_path, log, TASKS)
    port = free_port()
    workers = [spawn(url, tasks, f"pooled-{i}", "--listen-database-url", conninfo,
                     *(("--metrics-port", str(port)) if i == 0 else ()))
               for i in range(3)]
    assert set(registered(sql, *workers).values()) == {"listen"}
    assert metrics_up(port, workers[0]) == 1.0

    started = time.monotonic()

    def enqueue(n: int) -> list[int]:
        with pooled(url) as conn:
            return [add_job(conn, "note", f'{{"n": {i}}}') for i in range(n)]

    with ThreadPoolExecutor(N_ENQUEUERS) as pool:
        batches = list(pool.map(enqueue, [N_JOBS // N_ENQUEUERS] * N_ENQUEUERS))
    enqueued = time.monotonic() - started
    ids = {i for batch in batches for i in batch}
    assert len(ids) == N_JOBS
    wait_done(sql, N_JOBS, workers, 90)
    drained = time.monotonic() - started
    assert_each_ran_once(log, sql, ids)
    per_worker = {pid: n for pid, n in
                  ((w.pid, sum(1 for c in read_claims(log) if c.pid == w.pid))
                   for w in workers)}

    latencies = pickup_latencies(url, ClaimLog(log), N_SAMPLES, timeout=5)
    report("pooler", "direct listen", enqueue_s=f"{enqueued:.2f}", drain_s=f"{drained:.2f}",
           per_worker=sorted(per_worker.values()), p50=ms(p(latencies, 0.5)),
           p95=ms(p(latencies, 0.95)), max=ms(max(latencies)))
    assert p(latencies, 0.5) < 0.100, sorted(latencies)

    assert set(registered(sql, *workers).values()) == {"listen"}
    for w in workers:
        assert "prepared statement" not in w.log_text()
        assert w.stop() == 0, w.log_text()[-3000:]
    assert sql("SELECT count(*) FROM app_jobs.workers") == [(0,)]


# -- (2, 3) no direct LISTEN: silent, and --no-listen --------------------------------------------

POLL = 0.5


@pytest.mark.parametrize("listen", ["pooler", "none"])
def test_worker_without_direct_listen_polls(pgbouncer_transaction, conninfo, sql, tmp_path,
                                            spawn, listen):
    """pooler: a worker given only the pooler URL probes its LISTEN, finds it silent, logs
    the WARNING naming --listen-database-url exactly once, says wakeup 'silent' (workers
    table, `pgjobs status`, listen_ok 0) and still runs 200 pooled enqueues once each by
    polling every --poll-interval. none: --no-listen says 'poll', logs no warning and
    opens no LISTEN connection."""
    url = pgbouncer_transaction.url_for(conninfo)
    log = tmp_path / "claims"
    tasks = write_tasks(tmp_path, log, TASKS)
    port = free_port()
    extra = ("--no-listen",) if listen == "none" else ()
    w = spawn(url, tasks, f"poller-{listen}", "--poll-interval", str(POLL),
              "--metrics-port", str(port), *extra)
    expect = {"pooler": "silent", "none": "poll"}[listen]
    assert registered(sql, w) == {w.worker_id: expect}
    assert metrics_up(port, w) == 0.0

    with pooled(url) as conn:
        ids = {add_job(conn, "note", f'{{"n": {i}}}') for i in range(200)}
    wait_done(sql, 200, [w], 30)
    assert_each_ran_once(log, sql, ids)
    latencies = pickup_latencies(url, ClaimLog(log), 10, timeout=5 * POLL, jitter=POLL)
    report("pooler", f"listen={listen}", p50=ms(p(latencies, 0.5)),
           p95=ms(p(latencies, 0.95)), max=ms(max(latencies)))
    # Polling: every job within about one interval (no job waits for a heartbeat or more).
    assert max(latencies) < POLL + 1, sorted(latencies)

    status = pgjobs_cmd(url, "status")
    assert status.returncode == 0, status.stderr
    (row,) = [ln for ln in status.stdout.splitlines() if w.worker_id in ln]
    assert {"pooler": "LISTEN silent", "none": "--no-listen"}[listen] in row, status.stdout
    clients = [c["application_name"] for c in pgbouncer_transaction.clients(dbname(conninfo))]
    assert not [c for c in clients if c.startswith("pgjobs-listen")], clients

    assert registered(sql, w) == {w.worker_id: expect}
    assert w.stop() == 0
    text = w.log_text()
    assert text.count(SILENT_WARNING) == (1 if listen == "pooler" else 0), text
    if listen == "pooler":
        assert "--listen-database-url" in text and "--no-listen" in text


# -- (4) nothing of a worker is seen by other clients of the pool -------------------------------

SAMPLE = """
SELECT pg_backend_pid(), current_setting('statement_timeout'),
       current_setting('lock_timeout'), current_setting('idle_in_transaction_session_timeout'),
       ARRAY(SELECT pg_listening_channels() ORDER BY 1)::text[],
       coalesce(current_setting('pgjobs.ignore_enqueues', true), '')
"""


def sample_servers(url: str, n: int) -> tuple[list[tuple], list[int | None]]:
    """n clients of the pool, each inside a transaction at the same time, so each has a
    server connection of its own (n = the pool size: every server of the pool): what each
    sees (SAMPLE) and the id its add_job returns."""
    conns = [pooled(url) for _ in range(n)]
    try:
        seen, ids = [], []
        for conn in conns:
            conn.execute("BEGIN")
            seen.append(conn.execute(SAMPLE).fetchone())
        for conn in conns:
            ids.append(conn.execute("SELECT app_jobs.add_job(identifier := 'note')")
                       .fetchone()[0])
            conn.execute("COMMIT")
        return seen, ids
    finally:
        for conn in conns:
            conn.close()


def test_worker_settings_and_listen_stay_off_pooled_servers(
        pgbouncer_transaction, conninfo, sql, tmp_path, spawn):
    """Isolation: with a direct-LISTEN worker and a --no-listen worker busy on the
    transaction pool, a client on every one of its server connections sees the server's
    statement_timeout, lock_timeout and idle_in_transaction_session_timeout (not the
    worker's 60 s / 5 s), no LISTEN, and no pgjobs.ignore_enqueues while another client
    sits inside testing.ignore_enqueues; its add_job inserts. (A pooler-only worker's
    probe: test_silent_worker_leaves_no_listen_on_round_robin_pool.)"""
    bouncer = pgbouncer_transaction
    url = bouncer.url_for(conninfo)
    log = tmp_path / "claims"
    tasks = write_tasks(tmp_path, log, TASKS)
    workers = [spawn(url, tasks, "iso-direct", "--listen-database-url", conninfo,
                     "--heartbeat-interval", "0.5", "--dead-for", "2", "--poll-interval", "0.2"),
               spawn(url, tasks, "iso-poll", "--no-listen", "--heartbeat-interval", "0.5",
                     "--dead-for", "2", "--poll-interval", "0.2")]
    assert registered(sql, *workers) == {"iso-direct": "listen", "iso-poll": "poll"}
    with psycopg.connect(conninfo, autocommit=True) as direct:
        defaults = direct.execute(SAMPLE).fetchone()[1:4]

    # Load from several clients, so the workers' statements spread over many servers.
    def enqueue(n: int) -> int:
        with pooled(url) as conn:
            for i in range(n):
                add_job(conn, "note", f'{{"n": {i}}}')
        return n

    with ThreadPoolExecutor(6) as pool:
        total = sum(pool.map(enqueue, [50] * 6))
    wait_done(sql, total, workers, 30)
    time.sleep(1)  # heartbeats, polls, reaps: more worker statements on more servers
    used = {s["remote_pid"] for s in bouncer.servers(dbname(conninfo))}
    assert len(used) >= 3, used

    seen, ids = sample_servers(url, bouncer.pool_size)
    pids = {row[0] for row in seen}
    assert used <= pids, "some server connection was not sampled"
    assert len(pids) == bouncer.pool_size
    for pid, *timeouts, channels, ignore in seen:
        assert tuple(timeouts) == defaults, (pid, timeouts, "server default", defaults)
        assert channels == [], (pid, channels)
        assert ignore == "", (pid, ignore)
    assert None not in ids

    with pooled(url) as switched:
        with testing.ignore_enqueues(switched):
            assert pgjobs.add_job(switched, "note") is None
            # The switched client holds one server for its block: sample all the others.
            seen, ids = sample_servers(url, bouncer.pool_size - 1)
        assert pgjobs.add_job(switched, "note") is not None
    assert [row[5] for row in seen] == [""] * len(seen)
    assert None not in ids, "another client's add_job was ignored"
    seen, ids = sample_servers(url, bouncer.pool_size)
    assert [row[5] for row in seen] == [""] * len(seen)
    assert None not in ids
    for w in workers:
        assert w.stop() == 0


def test_silent_worker_leaves_no_listen_on_round_robin_pool(
        pgbouncer_round_robin, conninfo, tmp_path, spawn):
    """Isolation, busy pool: on a pool that spreads a client's transactions over its servers
    (server_round_robin), a pooler-only worker that finds its LISTEN silent leaves no
    LISTEN on any server connection."""
    url = pgbouncer_round_robin.url_for(conninfo)
    warm(url, 8)
    tasks = write_tasks(tmp_path, tmp_path / "claims", TASKS)
    w = spawn(url, tasks, "rr-pooled", "--poll-interval", "0.2")
    with pooled(url) as conn:
        wait_for(lambda: conn.execute("SELECT wakeup FROM app_jobs.workers WHERE id = %s",
                                      (w.worker_id,)).fetchall() == [("silent",)],
                 20, "the worker to find its LISTEN silent")
    seen, _ = sample_servers(url, pgbouncer_round_robin.pool_size)
    listening = {row[0]: row[4] for row in seen if row[4]}
    assert w.stop() == 0
    assert listening == {}, f"LISTEN left on pooled server connections: {listening}"


# -- (5) cancel, cron, SIGTERM ------------------------------------------------------------------

HEARTBEAT = 10


def test_cancel_cron_and_sigterm_through_the_pooler(pgbouncer_transaction, conninfo, sql,
                                                    tmp_path, spawn):
    """cancel_job sent through the transaction pooler stops a running handler well within
    the 10 s heartbeat interval (only the jobs:cancel notification is that fast); a
    schedule made and made due through the pooler spawns one job that runs; SIGTERM hands
    the running job back (attempt refunded, unlocked), unregisters and exits 0."""
    url = pgbouncer_transaction.url_for(conninfo)
    log = tmp_path / "claims"
    claims = ClaimLog(log)
    tasks = write_tasks(tmp_path, log, TASKS)
    w = spawn(url, tasks, "lifecycle", "--listen-database-url", conninfo,
              "--heartbeat-interval", str(HEARTBEAT), "--dead-for", str(3 * HEARTBEAT),
              "--schedule-interval", "0.5", "--shutdown-timeout", "1")
    assert registered(sql, w) == {w.worker_id: "listen"}

    with pooled(url) as conn:
        # cron
        (schedule_id,) = conn.execute(
            "SELECT (app_jobs.add_scheduled_job(identifier := 'tick', "
            "schedule_info := '{\"rule\": \"* * * * *\"}'::json)).id").fetchone()
        conn.execute("UPDATE app_jobs.scheduled_jobs SET next_run_at = now() WHERE id = %s",
                     (schedule_id,))
        wait_for(lambda: sql("SELECT count(*) FROM app_jobs.job_history "
                             "WHERE task_identifier = 'tick' AND status = 'completed'"),
                 10, "the scheduled job to run")
        time.sleep(1)  # more scheduler ticks: the slot must not fire again
        assert sql("SELECT count(*) FROM app_jobs.job_history WHERE task_identifier = 'tick'"
                   ) == [(1,)]
        assert sql("SELECT next_run_at > now() FROM app_jobs.scheduled_jobs WHERE id = %s",
                   (schedule_id,)) == [(True,)]

        # cancel
        job_id = add_job(conn, "nap", '{"seconds": 30}')
        wait_for(lambda: claims.start_of(job_id), 10, "the job to start")
        time.sleep(0.2)
        sent = time.monotonic()
        assert conn.execute("SELECT app_jobs.cancel_job(%s)", (job_id,)).fetchone() == \
            ("cancelling",)
        ended = wait_for(lambda: claims.end_of(job_id), HEARTBEAT + 5,
                         "the cancelled handler to end")
        report("pooler", "cancel", after=ms(ended - sent), heartbeat=f"{HEARTBEAT}s")
        assert ended - sent < 1.5, "cancel waited for a heartbeat: no jobs:cancel notification"
        wait_for(lambda: sql("SELECT status FROM app_jobs.job_history WHERE job_id = %s",
                             (job_id,)) == [("cancelled",)], 10, "the job to end cancelled")

        # SIGTERM with a job running
        job_id = add_job(conn, "nap", '{"seconds": 30}')
        wait_for(lambda: claims.start_of(job_id), 10, "the job to start")
    sent = w.signal(signal.SIGTERM)
    assert w.wait(15) == 0, w.log_text()[-3000:]
    report("pooler", "sigterm", exit_after=f"{time.monotonic() - sent:.2f}s")
    assert sql("SELECT count(*) FROM app_jobs.workers") == [(0,)]
    assert sql("SELECT locked_by, locked_at, attempts FROM app_jobs.jobs WHERE id = %s",
               (job_id,)) == [(None, None, 0)]
    assert f"job {job_id} released" in w.log_text()


# -- (6) enqueue from any client ---------------------------------------------------------------

N_CALLS = 7  # more than psycopg's default prepare threshold (5)


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_enqueue_from_any_client(mode, request, conninfo, sql):
    """Enqueue through the pooler in both modes: psql (simple protocol), a trigger
    (tg_add_job_with_row_id), psycopg with prepare_threshold=None and pgjobs.add_job,
    each more than 5 times on one connection; in session mode also psycopg with its
    default prepare threshold (prepared statements do work there)."""
    bouncer: PgBouncer = request.getfixturevalue(f"pgbouncer_{mode}")
    url = bouncer.url_for(conninfo)

    script = "".join(f"SELECT app_jobs.add_job(identifier := 'from_psql', "
                     f"payload := json_build_object('n', {n}));\n" for n in range(N_CALLS))
    res = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", plain(url)],
                         input=script, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr

    with pooled(url) as conn:
        conn.execute("CREATE TABLE signups (id serial PRIMARY KEY, email text)")
        conn.execute("CREATE TRIGGER signup_job AFTER INSERT ON signups FOR EACH ROW "
                     "EXECUTE FUNCTION app_jobs.tg_add_job_with_row_id('from_trigger')")
        for n in range(N_CALLS):
            conn.execute("INSERT INTO signups (email) VALUES (%s)", (f"u{n}@example.com",))
        for n in range(N_CALLS):
            add_job(conn, "from_psycopg", f'{{"n": {n}}}')
        for n in range(N_CALLS):
            assert pgjobs.add_job(conn, "from_client", {"n": n}) is not None
    expect = {"from_psql": N_CALLS, "from_trigger": N_CALLS, "from_psycopg": N_CALLS,
              "from_client": N_CALLS}

    if mode == "session":
        with psycopg.connect(url, autocommit=True) as conn:  # default prepare_threshold
            for n in range(N_CALLS):
                add_job(conn, "from_prepared", f'{{"n": {n}}}')
            assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
        expect["from_prepared"] = N_CALLS

    assert dict(sql("SELECT task_identifier, count(*) FROM app_jobs.jobs GROUP BY 1")) == expect
    assert sorted(r[0] for r in sql(
        "SELECT (payload->>'id')::int FROM app_jobs.jobs WHERE task_identifier = "
        "'from_trigger'")) == list(range(1, N_CALLS + 1))


NODE_SCRIPT = """
const { Client } = require('pg');
(async () => {
  const client = new Client({ connectionString: process.argv[2] });
  await client.connect();
  for (let n = 0; n < Number(process.argv[3]); n++) {
    await client.query("SELECT app_jobs.add_job(identifier := $1, payload := $2::json)",
                       ['from_node', JSON.stringify({ n })]);
  }
  await client.end();
})().catch((e) => { console.error(e.message); process.exit(1); });
"""


def node_postgres() -> str | None:
    """Why node-postgres cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed"
    probe = subprocess.run(["node", "-e", "require('pg')"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        return "the node-postgres module `pg` is not installed (npm install pg)"
    return None


def node_url(conninfo: str) -> str:
    params = conninfo_to_dict(conninfo)
    return f"postgresql://{params['user']}@{params['host']}:{params['port']}/{params['dbname']}"


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_enqueue_from_node_postgres(mode, request, conninfo, sql, tmp_path):
    """node-postgres (parameterized queries, unnamed statements) enqueues through the
    pooler in both modes; skipped when node or its `pg` module is missing."""
    missing = node_postgres()
    if missing:
        pytest.skip(f"node-postgres check skipped: {missing}")
    bouncer: PgBouncer = request.getfixturevalue(f"pgbouncer_{mode}")
    script = tmp_path / "enqueue.js"
    script.write_text(NODE_SCRIPT)
    res = subprocess.run(["node", str(script), node_url(bouncer.url_for(conninfo)),
                          str(N_CALLS)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert sql("SELECT count(*) FROM app_jobs.jobs WHERE task_identifier = 'from_node'"
               ) == [(N_CALLS,)]


# -- (7) session mode: a full pool -------------------------------------------------------------

CONNECT_TIMEOUT = 2


def fill_session_pool(bouncer: PgBouncer, url: str, tasks: Path, sql, spawn,
                      patience: float) -> tuple[list[WorkerProc], WorkerProc, float]:
    """Start workers (--connect-timeout 2) on the session pool, one at a time, until one
    logs that it waited for a database connection (waiting up to `patience` s after its
    start for each to register or log it): the workers that fit, that one, and how long
    after its start the line came."""
    running: list[WorkerProc] = []
    for n in range(bouncer.pool_size):
        w = spawn(url, tasks, f"session-{n}", "--connect-timeout", str(CONNECT_TIMEOUT))
        spawned = time.monotonic()

        def outcome(w=w):
            alive(w)
            if WAITED in w.log_text():
                return "waited"
            return "registered" if sql("SELECT wakeup FROM app_jobs.workers WHERE id = %s",
                                       (w.worker_id,)) == [("listen",)] else None

        got = wait_for(outcome, patience, f"worker {w.worker_id} to register or log that "
                       "it waited for a connection")
        if got == "waited":
            assert running, "not even one worker fit into the pool"
            return running, w, time.monotonic() - spawned
        running.append(w)
    raise AssertionError(f"{bouncer.pool_size} workers fit into a pool of "
                         f"{bouncer.pool_size} server connections")


def test_full_session_pool_logs_connect_wait_then_starts(pgbouncer_session, conninfo, sql,
                                                        tmp_path, spawn):
    """Session mode, pool of 4 server connections: workers are started until one cannot
    get its connections; with --connect-timeout 2 it logs the ERROR "waited 2 s for a
    database connection" (and again at each retry) instead of hanging silently, claims
    nothing meanwhile, and once the others stop it starts (wakeup 'listen': LISTEN works in
    session mode) and runs jobs."""
    bouncer = pgbouncer_session
    url = bouncer.url_for(conninfo)
    log = tmp_path / "claims"
    claims = ClaimLog(log)
    tasks = write_tasks(tmp_path, log, TASKS)
    running, waiting, waited_after = fill_session_pool(bouncer, url, tasks, sql, spawn,
                                                       patience=CONNECT_TIMEOUT + 12)
    pool = bouncer.pool(dbname(conninfo))
    report("pooler", "session pool", workers_fitting=len(running),
           error_after=f"{waited_after:.2f}s",
           pool=f"{pool['sv_active']} active, {pool['cl_waiting']} waiting")
    line = next(ln for ln in waiting.log_text().splitlines() if WAITED in ln)
    assert " ERROR " in line and f"waited {CONNECT_TIMEOUT} s" in line, line

    # Those that fit work; the one left out does not claim.
    with pooled(url) as conn:
        job_id = add_job(conn, "note")
    wait_for(lambda: claims.end_of(job_id), 10, "a running worker to run a job")
    assert waiting.pid not in {c.pid for c in read_claims(log)}
    alive(waiting)

    for w in running:
        assert w.stop() == 0
    registered(sql, waiting, timeout=30)
    assert registered(sql, waiting) == {waiting.worker_id: "listen"}
    with pooled(url) as conn:
        job_id = add_job(conn, "note")
    wait_for(lambda: claims.end_of(job_id), 10, "the late worker to run a job")
    assert [c.pid for c in read_claims(log) if c.job_id == job_id] == [waiting.pid]
    assert waiting.stop() == 0


def test_connect_timeout_error_comes_after_the_timeout(pgbouncer_session, conninfo, sql,
                                                      tmp_path, spawn):
    """Session mode, full pool: the worker left out logs its "waited 2 s" ERROR within
    2 s + startup + slack (5 s after it was started), not seconds later."""
    url = pgbouncer_session.url_for(conninfo)
    tasks = write_tasks(tmp_path, tmp_path / "claims", TASKS)
    running, waiting, waited_after = fill_session_pool(pgbouncer_session, url, tasks, sql,
                                                       spawn, patience=CONNECT_TIMEOUT + 12)
    for w in (*running, waiting):
        w.stop()
    assert waited_after < CONNECT_TIMEOUT + 3, f"the ERROR came {waited_after:.1f} s after start"


# -- (8) the admin command --------------------------------------------------------------------

@pytest.mark.parametrize("pooler", ["pgbouncer_transaction", "pgbouncer_round_robin"])
def test_admin_command_through_transaction_pooler(pooler, request, conninfo, sql, tmp_path):
    """`pgjobs status --watch` (the same statements many times on one connection, so a
    prepared statement would meet a server without it), `add`, `retry --all-failed`,
    `remove --task` and `status` all work through a transaction pooler with no option."""
    bouncer: PgBouncer = request.getfixturevalue(pooler)
    url = bouncer.url_for(conninfo)
    warm(url, 4)

    out = tmp_path / "watch.out"
    with open(out, "w") as stdout:
        watch = subprocess.Popen([PGJOBS, "--database-url", url, "status", "--watch", "0.1"],
                                 stdout=stdout, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: watch.poll() is not None or
                 out.read_text().count("pgjobs status at") >= 10, 20, "10 status refreshes")
    finally:
        if watch.poll() is None:
            watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=10)
    assert watch.returncode == 0, err
    assert err == ""
    assert out.read_text().count("pgjobs status at") >= 10

    res = pgjobs_cmd(url, "add", "broken", '{"n": 1}')
    assert res.returncode == 0 and res.stdout.startswith("added job "), res.stderr
    for _ in range(N_CALLS - 1):
        res = pgjobs_cmd(url, "add", "broken")
        assert res.returncode == 0, res.stderr
    sql("UPDATE app_jobs.jobs SET attempts = max_attempts, last_error = 'boom'")
    res = pgjobs_cmd(url, "retry", "--all-failed")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"retrying {N_CALLS} job(s)"), res.stdout
    assert sql("SELECT count(*) FROM app_jobs.jobs WHERE attempts = 0 AND last_error IS NULL"
               ) == [(N_CALLS,)]
    sql("UPDATE app_jobs.jobs SET attempts = max_attempts, last_error = 'boom again'")
    res = pgjobs_cmd(url, "remove", "--task", "broken")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"removed {N_CALLS} job(s)"), res.stdout
    res = pgjobs_cmd(url, "status")
    assert res.returncode == 0, res.stderr
    assert "notification queue usage" in res.stdout
