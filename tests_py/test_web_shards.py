"""The dashboard over several shards (pgjobs.web.app with a list of URLs; `pgjobs web` with
--database-url repeated), on two throwaway clusters that each run pgjobs (no PL/Proxy: the
dashboard reads the shards, not the proxy): the overview's cards and per-task table are
the sum of both shards, with a line per shard; the job list shows both shards' jobs (a
shard column, links and checkboxes that carry the shard) and its keyset pages walk every
job of both shards once, both ways, also with the same ids on both; a job page, a job
action and a schedule action act on the shard they name only (checked in each shard's
database), a bad or missing shard is a 4xx; workers and schedules of both shards are
listed; each shard's hub signals its changes into the one event fanout; with a shard
stopped every page still answers 200 (the overview marks the shard unreachable), that
shard's job page 503, `pgjobs web --check` exits 1; when it is back it shows again.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from clusters import Cluster, pgjobs_database, running_clusters
from web_helpers import add_job, claim, csrf, failed_job, status_of

pytest.importorskip("starlette")
pytest.importorskip("httpx")

import pgjobs.web  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

PGJOBS = str(Path(sys.executable).parent / "pgjobs")
CARD_RE = re.compile(r'<a class="card (\w+)" href="[^"]*"><span class="n">([^<]+)</span>')
COLUMNS = ("waiting", "scheduled", "running", "retrying", "failed", "blocked")


class Shards:
    """Two shard databases on clusters of their own."""

    def __init__(self, clusters: list[Cluster], urls: list[str]):
        """Keep the clusters and their pgjobs databases' URLs (shard 0, shard 1)."""
        self.clusters = clusters
        self.urls = urls

    def sql(self, shard: int) -> Callable:
        """A `sql(query, params)` on the shard (web_helpers' signature): its rows."""
        def run(query: str, params=None) -> list:
            with psycopg.connect(self.urls[shard], autocommit=True) as conn:
                cur = conn.execute(query, params)
                return cur.fetchall() if cur.description else []
        return run


@pytest.fixture(scope="module")
def two_shards() -> Iterator[Shards]:
    """Two clusters, each with a pgjobs database."""
    with running_clusters("pgjobs-web-shards-", ("shard0", "shard1")) as clusters:
        yield Shards(clusters, [pgjobs_database(c) for c in clusters])


@pytest.fixture
def shards(two_shards: Shards) -> Iterator[Shards]:
    """The two shards, emptied, with their id sequences restarted (the same ids on both)."""
    for url in two_shards.urls:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE app_jobs.jobs, app_jobs.job_history, app_jobs.workers, "
                         "app_jobs.scheduled_jobs RESTART IDENTITY CASCADE")
    yield two_shards


@pytest.fixture
def client_for(shards: Shards):
    """Factory: a TestClient (lifespan running) on the dashboard of both shards."""
    opened = []

    def _make(**options) -> TestClient:
        client = TestClient(pgjobs.web.app(shards.urls, **options), follow_redirects=False)
        client.__enter__()
        opened.append(client)
        return client

    yield _make
    for client in opened:
        client.__exit__(None, None, None)


def cards(html: str) -> dict[str, str]:
    """The overview's status cards: status -> the number shown."""
    return dict(CARD_RE.findall(html))


def shard_row(html: str, shard: int) -> str:
    """The overview's line of one shard."""
    match = re.search(rf'<tr data-shard="{shard}"[^>]*>(.*?)</tr>', html, re.S)
    assert match, f"no line for shard {shard}"
    return match.group(0)


def refs(html: str) -> list[str]:
    """The job list's rows, as <shard>:<id>, in page order."""
    return re.findall(r'<tr data-id="(\d+:\d+)"', html)


def test_overview_adds_the_shards_up(shards: Shards, client_for):
    s0, s1 = shards.sql(0), shards.sql(1)
    for _ in range(3):
        add_job(s0, "mail")
    failed_job(s0, "bill")
    add_job(s0, "report", queue_name="reports")
    for _ in range(2):
        add_job(s1, "mail")
    add_job(s1, "render")
    claim(s1, "render")
    add_job(s1, "mail", run_at="2099-01-01T00:00:00Z")
    add_job(s1, "report", queue_name="reports")

    expected = dict.fromkeys(COLUMNS, 0)
    mail = dict.fromkeys(COLUMNS, 0)
    for sql in (s0, s1):
        for row in sql("SELECT task_identifier, waiting, scheduled, running, retrying, "
                       "failed, blocked FROM app_jobs.queue_stats"):
            for c, n in zip(COLUMNS, row[1:], strict=True):
                expected[c] += n
                if row[0] == "mail":
                    mail[c] += n
    assert expected == {"waiting": 7, "scheduled": 1, "running": 1, "retrying": 0,
                        "failed": 1, "blocked": 0}

    page = client_for().get("/")
    assert page.status_code == 200
    assert cards(page.text) == {c: str(n) for c, n in expected.items()}
    row = re.search(r'<a href="/jobs\?task=mail">mail</a>.*?</tr>', page.text, re.S).group(0)
    for c in COLUMNS:
        shown = re.search(rf'<td class="num {c}">(?:<a [^>]*>)?([^<]+)', row).group(1)
        assert shown == str(mail[c]), c
    # The named queue's counters (job_queues) of both shards, added up.
    assert re.search(r'>reports</a></td><td class="num">2</td>', page.text)
    assert "exact counts" in page.text and "~" not in "".join(cards(page.text).values())
    zero, one = shard_row(page.text, 0), shard_row(page.text, 1)
    assert "reachable" in zero and "unreachable" not in zero
    # waiting, running, failed, workers per shard
    assert re.findall(r'<td class="num">(\d+)</td>', zero) == ["4", "0", "1", "1"]
    assert re.findall(r'<td class="num">(\d+)</td>', one) == ["3", "1", "0", "1"]


def test_job_list_shows_and_pages_through_both_shards(shards: Shards, client_for):
    s0, s1 = shards.sql(0), shards.sql(1)
    ids0 = [add_job(s0, f"zero{n}") for n in range(4)]
    ids1 = [add_job(s1, f"one{n}") for n in range(3)]
    assert ids0[:3] == ids1  # ids are per shard: the same on both
    everything = sorted([(i, 0) for i in ids0] + [(i, 1) for i in ids1],
                        key=lambda r: (-r[0], r[1]))
    expected = [f"{s}:{i}" for i, s in everything]

    client = client_for(page_size=3)
    first = client.get("/jobs")
    assert first.status_code == 200
    assert '<th class="num">shard</th>' in first.text
    assert f'href="/jobs/{ids1[-1]}?shard=1"' in first.text
    assert 'value="1:' in first.text  # the checkboxes carry the shard

    # Older pages to the end, then newer ones back to the start: each job once, in order.
    seen, page = [], first
    while True:
        seen += refs(page.text)
        older = re.search(r'<a rel="next" href="([^"]+)"', page.text)
        if not older:
            break
        page = client.get(older.group(1).replace("&amp;", "&"))
        assert page.status_code == 200
    assert seen == expected
    back = refs(page.text)
    while True:
        newer = re.search(r'<a rel="prev" href="([^"]+)"', page.text)
        if not newer:
            break
        page = client.get(newer.group(1).replace("&amp;", "&"))
        back = refs(page.text) + back
    assert back == expected

    only = client.get("/jobs?shard=1")
    assert refs(only.text) == [f"1:{i}" for i in reversed(ids1)]
    assert client.get("/jobs?shard=2").status_code == 404
    assert client.get("/jobs?shard=one").status_code == 400
    assert client.get("/jobs?after=3").status_code == 400  # the cursor names its shard
    assert client.get("/jobs?after=1:3").status_code == 200


def test_job_page_and_actions_go_to_the_named_shard(shards: Shards, client_for):
    s0, s1 = shards.sql(0), shards.sql(1)
    a0 = add_job(s0, "on_zero", '{"who": "zero"}')
    a1 = add_job(s1, "on_one", '{"who": "one"}')
    b0, b1 = add_job(s0, "more_zero"), add_job(s1, "more_one")
    assert (a0, b0) == (a1, b1)
    client = client_for()

    page = client.get(f"/jobs/{a1}?shard=1")
    assert page.status_code == 200
    assert "on_one" in page.text and "on_zero" not in page.text
    assert 'name="shard" value="1"' in page.text
    assert "on_zero" in client.get(f"/jobs/{a0}?shard=0").text
    assert client.get(f"/jobs/{a1}").status_code == 400  # which shard?
    assert client.get(f"/jobs/{a1}?shard=2").status_code == 404
    assert client.get(f"/jobs/{a1}?shard=-1").status_code == 400

    token = csrf(page.text)
    done = client.post("/jobs/action", data={"csrf": token, "action": "cancel",
                                             "id": str(a1), "shard": "1"})
    assert done.status_code == 303
    assert status_of(s1, a1) == "cancelled"
    assert status_of(s0, a0) == "waiting"
    # Bulk from the list: <shard>:<id>.
    done = client.post("/jobs/action", data={"csrf": token, "action": "delete",
                                             "id": [f"0:{b0}"]})
    assert done.status_code == 303
    assert s0("SELECT count(*) FROM app_jobs.jobs WHERE id = %s", (b0,))[0][0] == 0
    assert status_of(s1, b1) == "waiting"
    for form, code in (({"id": str(b1)}, 400), ({"id": f"2:{b1}"}, 404),
                       ({"id": str(b1), "shard": "x"}, 400)):
        bad = client.post("/jobs/action", data={"csrf": token, "action": "cancel", **form})
        assert bad.status_code == code, form
    assert status_of(s1, b1) == "waiting"

    # Schedules: both listed; pause goes to the shard of the form.
    for sql in (s0, s1):
        sql("SELECT app_jobs.add_scheduled_job(identifier := 'tick', "
            "schedule_info := '{\"minute\": [0]}')")
    page = client.get("/schedules")
    assert page.status_code == 200
    assert 'data-id="0:1"' in page.text and 'data-id="1:1"' in page.text
    paused = client.post("/schedules/1/pause", data={"csrf": token, "shard": "1"})
    assert paused.status_code == 303
    assert s1("SELECT paused_at IS NOT NULL FROM app_jobs.scheduled_jobs")[0][0]
    assert not s0("SELECT paused_at IS NOT NULL FROM app_jobs.scheduled_jobs")[0][0]
    assert client.post("/schedules/1/pause", data={"csrf": token}).status_code == 400
    assert client.post("/schedules/1/pause",
                       data={"csrf": token, "shard": "9"}).status_code == 404

    # Workers of both shards, each with the jobs it holds there.
    held = claim(s1, "more_one")
    page = client.get("/workers")
    assert page.status_code == 200
    assert 'id="w-1-web-test-worker"' in page.text
    assert f'href="/jobs/{held}?shard=1"' in page.text


def test_every_shards_hub_signals_the_one_fanout(shards: Shards):
    state = pgjobs.web.app(shards.urls, poll_interval=0.2).state.pgjobs

    async def scenario() -> None:
        fanout = await state.fanout()
        queue = fanout.subscribe()
        try:
            deadline = time.monotonic() + 10
            while state.live_mode != "listen":
                assert time.monotonic() < deadline, state.live_mode
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # (the probes' own signals)
            while not queue.empty():
                queue.get_nowait()
            for shard in (1, 0):
                async with await psycopg.AsyncConnection.connect(
                        shards.urls[shard], autocommit=True) as conn:
                    await conn.execute("SELECT app_jobs.add_job(identifier := 'ping')")
                assert await asyncio.wait_for(queue.get(), 5) is not None, shard
        finally:
            await state.close()

    asyncio.run(scenario())


def test_a_shard_down_is_shown_as_such(shards: Shards, client_for):
    s0, s1 = shards.sql(0), shards.sql(1)
    add_job(s0, "alive")
    gone = add_job(s1, "away")
    client = client_for()
    assert client.get("/").status_code == 200  # both pools open
    check = subprocess.run([PGJOBS, "web", "--check", "--database-url", shards.urls[0],
                            "--database-url", shards.urls[1]],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert "2 of 2 shards reachable" in check.stdout

    down = shards.clusters[1]
    down.stop_now()
    try:
        page = client.get("/")
        assert page.status_code == 200
        one = shard_row(page.text, 1)
        assert 'class="unreachable"' in one and "unreachable" in one
        assert "unreachable" not in shard_row(page.text, 0)
        assert cards(page.text)["waiting"] == "1"  # shard 0's only
        assert "1 could not be read" in page.text
        page = client.get("/jobs")
        assert page.status_code == 200
        assert refs(page.text) == ["0:1"] and "shard 1 is unreachable" in page.text
        for path in ("/schedules", "/workers", "/"):
            assert client.get(path).status_code == 200, path
        assert client.get(f"/jobs/{gone}?shard=1").status_code == 503
        check = subprocess.run([PGJOBS, "web", "--check", "--database-url", shards.urls[0],
                                "--database-url", shards.urls[1]],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 1
        assert "shard 1" in check.stderr and "1 of 2 shards reachable" in check.stdout
    finally:
        down.start_again()
    page = client.get("/")
    assert "unreachable" not in shard_row(page.text, 1)
    assert cards(page.text)["waiting"] == "2"
