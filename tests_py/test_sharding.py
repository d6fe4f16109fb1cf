"""Sharding by tenant with PL/Proxy, end to end on three throwaway clusters (a proxy and two
shards that run pgjobs unchanged): `pgjobs shard` sets up the proxy; jobs enqueued through
it land on their tenant's shard (add_job, and add_jobs with mixed tenants, rows in order);
one worker with both shard URLs runs every job exactly once; cancel_job, job_status and
queue_stats work through the proxy, with per-shard job ids; `pgjobs status` adds the
shards up; a shard that goes down does not stop the other shard's jobs.

Skipped when PL/Proxy is not installed (apt-get install postgresql-15-plproxy; the
bootstrap does it when run as root).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from clusters import Cluster, pgjobs_database, running_clusters
from workerproc import LOG_PRELUDE, run_burst, start_worker, stop, wait_for, write_tasks

PGJOBS = str(Path(sys.executable).parent / "pgjobs")
TENANTS = [uuid.uuid5(uuid.NAMESPACE_DNS, f"tenant-{i}.pgjobs.test") for i in range(50)]


def _plproxy_missing() -> str | None:
    try:
        sharedir = subprocess.run(["pg_config", "--sharedir"], capture_output=True,
                                  text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "pg_config not found"
    if not Path(sharedir, "extension", "plproxy.control").exists():
        return ("PL/Proxy is not installed: apt-get install postgresql-15-plproxy "
                "(scripts/bootstrap.sh does it when run as root)")
    return None


pytestmark = pytest.mark.skipif(_plproxy_missing() is not None,
                                reason=_plproxy_missing() or "")


@dataclass
class Sharded:
    proxy: str
    shards: list[str]
    clusters: list[Cluster]


@pytest.fixture(scope="module")
def sharded() -> Iterator[Sharded]:
    """A proxy database and two shard databases, each on a cluster of its own."""
    with running_clusters("pgjobs-sharding-", ("proxy", "shard0", "shard1")) as clusters:
        shards = [pgjobs_database(c) for c in clusters[1:]]
        with psycopg.connect(clusters[0].conninfo("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE proxy")
        proxy = clusters[0].conninfo("proxy")
        res = subprocess.run([PGJOBS, "--database-url", proxy, "shard",
                              "--shard", shards[0], "--shard", shards[1]],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert "proxy ready: 2 shard(s)" in res.stdout
        yield Sharded(proxy, shards, clusters)


@pytest.fixture
def env(sharded: Sharded) -> Iterator[Sharded]:
    """The sharded set-up with empty shards."""
    for url in sharded.shards:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE app_jobs.jobs, app_jobs.job_history, app_jobs.workers "
                         "CASCADE")
    yield sharded


def shard_of(tenant: uuid.UUID | None, conn: psycopg.Connection) -> int:
    """The shard a tenant belongs on, computed here (not by the proxy's routing)."""
    if tenant is None:
        return 0
    return conn.execute("SELECT hashtext(%s::text) & 1", (str(tenant),)).fetchone()[0]


def enqueue_2000(proxy: psycopg.Connection) -> list[uuid.UUID]:
    """2,000 jobs of 50 tenants through the proxy: 100 by add_job, 1,900 by add_jobs
    calls that mix tenants. Payload n numbers them 0..1999; the tenant of job n is
    returned at index n."""
    tenants = [TENANTS[n % len(TENANTS)] for n in range(2000)]
    for n in range(100):
        row = proxy.execute(
            "SELECT id, database_id FROM app_jobs.add_job(db_id := %s, identifier := 'work',"
            " payload := json_build_object('n', %s::int))", (tenants[n], n)).fetchone()
        assert row[1] == tenants[n]
    for start in range(100, 2000, 475):
        ns = list(range(start, start + 475))
        rows = proxy.execute(
            "SELECT database_id, (payload->>'n')::int FROM app_jobs.add_jobs("
            " array_fill('work'::text, ARRAY[%s]), payloads := %s::json[], db_ids := %s)",
            (len(ns), [f'{{"n": {n}}}' for n in ns], [tenants[n] for n in ns])).fetchall()
        # In the callers' order, whatever shard each went to.
        assert rows == [(tenants[n], n) for n in ns]
    return tenants


def test_jobs_land_on_their_tenants_shard(env: Sharded):
    with psycopg.connect(env.proxy, autocommit=True) as proxy:
        tenants = enqueue_2000(proxy)
        expected = Counter(shard_of(t, proxy) for t in tenants)
    assert expected[0] and expected[1], "50 tenants must spread over both shards"
    for i, url in enumerate(env.shards):
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute("SELECT database_id, (payload->>'n')::int FROM app_jobs.jobs"
                                ).fetchall()
            assert len(rows) == expected[i]
            assert all(shard_of(db_id, conn) == i for db_id, _ in rows)
            assert all(tenants[n] == db_id for db_id, n in rows)


def test_one_worker_with_both_shards_runs_every_job_once(env: Sharded, tmp_path: Path):
    with psycopg.connect(env.proxy, autocommit=True) as proxy:
        enqueue_2000(proxy)
    ran = tmp_path / "ran.log"
    tasks = write_tasks(tmp_path, f"""
        @pgjobs.task
        def work(payload, job):
            log({str(ran)!r}, payload["n"])
        """, prelude=LOG_PRELUDE)
    res = run_burst(env.shards[0], tasks, "--database-url", env.shards[1],
                    "--concurrency", "8", timeout=60)
    assert res.returncode == 0, res.stderr
    counts = Counter(int(x) for x in ran.read_text().split())
    assert sorted(counts) == list(range(2000))
    assert set(counts.values()) == {1}
    for url in env.shards:
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM app_jobs.jobs").fetchone()[0] == 0
            done = conn.execute("SELECT count(*) FROM app_jobs.job_history"
                                " WHERE status = 'completed'").fetchone()[0]
            assert done > 0  # each shard's own claim loop did its part


def test_cancel_status_and_stats_through_the_proxy(env: Sharded):
    with psycopg.connect(env.proxy, autocommit=True) as proxy:
        zero = [t for t in TENANTS if shard_of(t, proxy) == 0]
        one = [t for t in TENANTS if shard_of(t, proxy) == 1]
        later = "now() + interval '1 hour'"
        add = ("SELECT id FROM app_jobs.add_job(db_id := %s, identifier := 'work', "
               f"run_at := {later})")
        a = proxy.execute(add, (zero[0],)).fetchone()[0]
        b = proxy.execute(add, (one[0],)).fetchone()[0]
        a2 = proxy.execute(add, (zero[1],)).fetchone()[0]
        # Ids are per shard: the first job of each shard has the same id.
        assert a == b
        # Another tenant's job (same shard, same id space) is not found by id alone.
        assert proxy.execute("SELECT app_jobs.cancel_job(%s, %s)", (a2, zero[0])
                             ).fetchone()[0] is None
        assert proxy.execute("SELECT app_jobs.cancel_job(%s, %s)", (a, zero[0])
                             ).fetchone()[0] == "cancelled"
        assert proxy.execute("SELECT status FROM app_jobs.job_status(%s, %s)",
                             (a, zero[0])).fetchall() == [("cancelled",)]
        # The other shard's job with the same id is untouched.
        assert proxy.execute("SELECT status FROM app_jobs.job_status(%s, %s)",
                             (b, one[0])).fetchall() == [("scheduled",)]
        assert proxy.execute("SELECT status FROM app_jobs.job_status(%s, %s)",
                             (a2, zero[1])).fetchall() == [("scheduled",)]
        # That shard has a job with this id, of another tenant.
        assert proxy.execute("SELECT count(*) FROM app_jobs.job_status(%s, %s)",
                             (b, one[1])).fetchone()[0] == 0
        # queue_stats adds the shards up; NULL db_id goes to the first shard.
        proxy.execute("SELECT app_jobs.add_job(identifier := 'work')")
        assert proxy.execute(
            "SELECT scheduled, waiting, cancelled_last_5m FROM app_jobs.queue_stats"
            " WHERE task_identifier = 'work'").fetchall() == [(2, 1, 1)]
        sched = proxy.execute(
            "SELECT database_id FROM app_jobs.add_scheduled_job(db_id := %s, identifier :="
            " 'work', schedule_info := '{\"minute\": [0]}', job_key := 'hourly')",
            (one[1],)).fetchone()[0]
        assert sched == one[1]
    with psycopg.connect(env.shards[0], autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM app_jobs.jobs WHERE database_id IS NULL"
                            ).fetchone()[0] == 1
    with psycopg.connect(env.shards[1], autocommit=True) as conn:
        assert conn.execute("SELECT database_id FROM app_jobs.scheduled_jobs").fetchall() == [
            (one[1],)]
    res = subprocess.run([PGJOBS, "status", "--database-url", env.shards[0],
                          "--database-url", env.shards[1]],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "== shard 0:" in res.stdout and "== shard 1:" in res.stdout
    total = res.stdout.split("== all shards (2 of 2 answered)")[1]
    work = next(line.split() for line in total.splitlines() if line.startswith("work"))
    assert work[2:4] == ["1", "2"]  # waiting, scheduled over both shards


def test_a_shard_down_does_not_stop_the_others_jobs(env: Sharded, tmp_path: Path, killer):
    ran = tmp_path / "ran.log"
    tasks = write_tasks(tmp_path, f"""
        @pgjobs.task
        def work(payload, job):
            log({str(ran)!r}, payload["n"])
        """, prelude=LOG_PRELUDE)
    proc = start_worker(env.shards[0], tasks, "--database-url", env.shards[1],
                        "--poll-interval", "0.5")
    killer.append(proc)
    down = env.clusters[2]
    with psycopg.connect(env.proxy, autocommit=True) as proxy:
        zero = [t for t in TENANTS if shard_of(t, proxy) == 0]
        one = [t for t in TENANTS if shard_of(t, proxy) == 1]

        def add(n: int, tenant: uuid.UUID) -> None:
            proxy.execute("SELECT app_jobs.add_job(db_id := %s, identifier := 'work',"
                          " payload := json_build_object('n', %s::int))", (tenant, n))

        add(0, zero[0])
        add(1, one[0])
        wait_for(lambda: ran.exists() and sorted(ran.read_text().split()) == ["0", "1"],
                 20, "a job on each shard")
        down.stop_now()
        try:
            # The proxy cannot reach the stopped shard; the other one takes jobs on.
            with pytest.raises(psycopg.Error):
                add(100, one[1])
            for n in range(2, 12):
                add(n, zero[n % len(zero)])
            wait_for(lambda: len(ran.read_text().split()) == 12, 20,
                     "the live shard's jobs while the other is down")
            assert proc.poll() is None
        finally:
            down.start_again()
        # Back up: the shard's worker reconnects and takes new jobs again.
        add(12, one[2])
        wait_for(lambda: "12" in ran.read_text().split(), 30, "the shard that came back")
    code, err = stop(proc)
    assert code == 0, err
    assert sorted(int(x) for x in ran.read_text().split()) == list(range(13))


def test_shard_command_runs_again_and_refuses_bad_set_ups(env: Sharded):
    def shard(url: str, *shards: str) -> subprocess.CompletedProcess:
        return subprocess.run([PGJOBS, "--database-url", url, "shard",
                               *(a for s in shards for a in ("--shard", s))],
                              capture_output=True, text=True, timeout=60)

    with psycopg.connect(env.proxy, autocommit=True) as proxy:
        moved = next(t for t in TENANTS if shard_of(t, proxy) == 0)
        proxy.execute("INSERT INTO app_jobs.tenant_shards (db_id, shard) VALUES (%s, 1)",
                      (moved,))
        try:
            again = shard(env.proxy, *env.shards)
            assert again.returncode == 0, again.stderr
            # Pins survive; a pinned tenant goes to its pinned shard.
            assert proxy.execute("SELECT app_jobs.shard_of(%s)", (moved,)).fetchone()[0] == 1
            proxy.execute("SELECT app_jobs.add_job(db_id := %s, identifier := 'work')",
                          (moved,))
            with psycopg.connect(env.shards[1], autocommit=True) as conn:
                assert conn.execute("SELECT database_id FROM app_jobs.jobs").fetchall() == [
                    (moved,)]
        finally:
            proxy.execute("DELETE FROM app_jobs.tenant_shards")
    three = shard(env.proxy, *env.shards, env.shards[0])
    assert three.returncode == 1 and "power-of-two number of shards" in three.stderr
    on_a_shard = shard(env.shards[0], *env.shards)
    assert on_a_shard.returncode == 1 and "has pgjobs installed" in on_a_shard.stderr

