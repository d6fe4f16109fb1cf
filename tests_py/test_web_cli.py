"""`pgjobs web`: serves the dashboard (with --base-path and --read-only) until stopped,
refuses a --database-id that is not a uuid, and without the web extras says
pip install "pgjobs[web]" instead of a traceback.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from web_helpers import add_job, free_port

PGJOBS = str(Path(sys.executable).parent / "pgjobs")


def test_pgjobs_web_serves_until_stopped(conninfo, sql, killer):
    pytest.importorskip("uvicorn")
    job = add_job(sql, "from_cli")
    port = free_port()
    proc = subprocess.Popen([PGJOBS, "web", "--database-url", conninfo, "--port", str(port),
                             "--base-path", "/ops", "--read-only"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killer.append(proc)
    url = f"http://127.0.0.1:{port}/ops/jobs"
    deadline = time.monotonic() + 15
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as res:
                body = res.read().decode()
            break
        except OSError:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "pgjobs web did not answer"
            time.sleep(0.1)
    assert f'href="/ops/jobs/{job}"' in body and "read-only" in body
    proc.terminate()
    out, err = proc.communicate(timeout=10)
    assert f"http://127.0.0.1:{port}/ops/" in err


def test_database_id_must_be_a_uuid(conninfo):
    res = subprocess.run([PGJOBS, "web", "--database-url", conninfo, "--database-id", "acme"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "not a uuid" in res.stderr


def test_missing_extras_say_what_to_install():
    code = ("import sys; sys.modules['starlette'] = None; "
            "from pgjobs.admin_cli import main; sys.exit(main(['web']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 1
    assert 'pip install "pgjobs[web]"' in res.stderr and "Traceback" not in res.stderr
