"""The dashboard in a real browser (Playwright driving Debian's chromium, served by uvicorn):
open the overview, filter to failed jobs, open one, press Retry and see it waiting; pause a
schedule and see it paused; see a
job enqueued elsewhere appear without reloading (SSE, LISTEN and the --no-listen polling
fallback); a screenshot of each page goes to test-output/web/ (and, with
PGJOBS_DOC_IMAGES=doc/images, overview.png and job.png for the README).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from web_helpers import LiveServer, add_job, claim, completed_job, failed_job, status_of

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

import pgjobs.web  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent
OUTPUT = Path(os.environ.get("PGJOBS_TEST_OUTPUT", REPO / "test-output")) / "web"
DOC_IMAGES = os.environ.get("PGJOBS_DOC_IMAGES")

pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} missing: apt-get install chromium (bootstrap does it as root)")


@pytest.fixture(scope="module")
def browser():
    """One headless chromium for the module."""
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def serve(conninfo):
    """Factory: uvicorn serving pgjobs.web.app(conninfo, **options); its base URL."""
    servers = []

    def _serve(**options) -> str:
        server = LiveServer(pgjobs.web.app(conninfo, **options))
        servers.append(server)
        return server.url

    yield _serve
    for server in servers:
        server.stop()


@pytest.fixture
def page(browser):
    """A fresh page (own cookies) at a screenshot-friendly size."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context.new_page()
    context.close()


def shot(page, name: str) -> None:
    """Screenshot the whole page into the test output (and doc/images when asked)."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if DOC_IMAGES and name in ("overview", "job"):
        Path(DOC_IMAGES).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(DOC_IMAGES) / f"{name}.png")


def seed(sql) -> int:
    """A queue worth looking at; the id of one failed job."""
    sql("SELECT app_jobs.add_jobs(ARRAY(SELECT 'send_email' FROM generate_series(1, 40)), "
        "ARRAY(SELECT json_build_object('to', 'user' || i || '@example.com') "
        "FROM generate_series(1, 40) AS i))")
    sql("SELECT app_jobs.add_jobs(ARRAY(SELECT 'resize_image' FROM generate_series(1, 12)), "
        "queue_names := ARRAY(SELECT 'images' FROM generate_series(1, 12)))")
    add_job(sql, "monthly_report", '{"month": "2024-11"}',
            run_at="2099-01-01T00:00:00+00:00")
    for i in range(6):
        completed_job(sql, f"sync_crm_{i % 2}")
    failed_job(sql, "send_sms", "gateway timeout", '{"to": "+49 30 1234"}')
    failed = failed_job(sql, "charge_card", "card declined: insufficient funds",
                        '{"order": 981, "amount": 12.5, "currency": "EUR"}',
                        error_data='{"type": "CardError", "code": "insufficient_funds", '
                                   '"traceback": "File \\"tasks.py\\", line 42, in charge"}')
    running = add_job(sql, "render_pdf", '{"invoice": 77}')
    claim(sql, "render_pdf")
    sql("SELECT app_jobs.set_progress('web-test-worker', %s, 60, 'page 3 of 5')", (running,))
    sql("SELECT app_jobs.add_scheduled_job(identifier := 'nightly_cleanup', "
        "schedule_info := '{\"rule\": \"30 2 * * *\", \"tz\": \"Europe/Berlin\"}')")
    return failed


def test_filter_open_retry(serve, page, sql):
    failed = seed(sql)
    base = serve()
    page.goto(base + "/")
    page.wait_for_selector("#per-task")
    assert "charge_card" in page.inner_text("#per-task")
    shot(page, "overview")

    page.click("a.card.failed")
    page.wait_for_url("**/jobs?status=failed")
    rows = page.locator("#job-list tbody tr")
    assert rows.count() == 2
    shot(page, "jobs-failed")

    page.click(f'#job-list a[href="/jobs/{failed}"]')
    page.wait_for_url(f"**/jobs/{failed}")
    assert page.inner_text("#job-status") == "failed"
    assert "insufficient funds" in page.inner_text("#history")
    shot(page, "job")

    page.click("button[value=retry]")
    page.wait_for_url(f"**/jobs/{failed}")
    assert page.inner_text("#job-status") == "waiting"
    assert "retried 1 job(s)" in page.inner_text(".flash")
    assert status_of(sql, failed) == "waiting"
    shot(page, "job-retried")

    page.goto(base + "/schedules")
    page.click("#schedules button[value=pause]")
    page.wait_for_url("**/schedules")
    assert "paused" in page.inner_text("#schedules tbody tr")
    assert page.locator("#schedules button[value=resume]").count() == 1
    assert sql("SELECT count(*) FROM app_jobs.scheduled_jobs WHERE paused_at IS NOT NULL"
               )[0][0] == 1
    shot(page, "schedules-paused")

    for path, name in (("/schedules", "schedules"), ("/workers", "workers"),
                       ("/jobs", "jobs")):
        page.goto(base + path)
        page.wait_for_selector("main#live")
        shot(page, name)


@pytest.mark.parametrize("listen", [True, False], ids=["listen", "no-listen"])
def test_new_job_appears_without_reloading(serve, page, sql, listen):
    add_job(sql, "already_there")
    base = serve(listen=listen)
    page.goto(base + "/jobs")
    # The SSE stream is open once the server's hub has a subscriber: wait for it through
    # the page's own live-update footer (it says how updates arrive after the first event).
    page.wait_for_function("document.querySelector('main#live') !== null")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        page.wait_for_timeout(100)
        if page.evaluate("performance.getEntriesByType('resource')"
                         ".some(e => e.name.endsWith('/events'))"):
            break
    page.wait_for_timeout(1200 if listen else 1500)  # LISTEN probed / first fingerprint
    marker = page.evaluate("document.body.dataset.marker = 'same-document'")
    del marker
    started = time.monotonic()
    job = add_job(sql, "appears_live", '{"hello": "browser"}')
    page.wait_for_selector(f'#job-list tr[data-id="{job}"]', timeout=5000)
    took = time.monotonic() - started
    assert page.evaluate("document.body.dataset.marker") == "same-document"  # no reload
    print(f"new job visible after {took:.2f} s ({'LISTEN' if listen else 'polling'})")
    assert took < (1.5 if listen else 2.5)
    expected = "LISTEN" if listen else "polling every second (--no-listen)"
    assert expected in page.inner_text("footer")
