"""pgjobs-worker as a subprocess, for the end-to-end tests: task modules written to
tmp_path, the installed console script started on them, stopped with SIGTERM, and a
poll-until helper. Imported by the test files (and faults.py); no fixtures here (those
live in conftest.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

WORKER = str(Path(sys.executable).parent / "pgjobs-worker")

# What a task module starts with unless a test gives its own prelude.
IMPORTS = "import asyncio, os, threading, time\nimport pgjobs\n\n"

# A prelude whose handlers append one line per event with os.write on an O_APPEND
# descriptor: one write per line, so lines from several processes never interleave.
LOG_PRELUDE = """\
import json, os, random, time
import pgjobs


def log(path, *fields):
    line = " ".join(str(f) for f in fields) + "\\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)

"""


def write_tasks(tmp_path: Path, body: str, name: str = "tasks_mod",
                prelude: str = IMPORTS) -> Path:
    """The task module tmp_path/<name>.py: prelude, then body (dedented)."""
    path = tmp_path / f"{name}.py"
    path.write_text(prelude + textwrap.dedent(body))
    return path


def worker_args(conninfo: str, tasks: Path, *extra: str) -> list[str]:
    return [WORKER, "--database-url", conninfo, "--tasks", str(tasks), *extra]


def run_burst(conninfo: str, tasks: Path, *extra: str,
              timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(worker_args(conninfo, tasks, "--burst", *extra),
                          capture_output=True, text=True, timeout=timeout)


def start_worker(conninfo: str, tasks: Path, *extra: str,
                 stdout: int = subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(worker_args(conninfo, tasks, *extra),
                            stdout=stdout, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen, timeout: float = 15) -> tuple[int, str]:
    """SIGTERM (if still running), then its exit code and stderr."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def wait_for(cond: Callable[[], object], timeout: float, what: str, step: float = 0.05):
    """Poll cond until it is truthy (returned) or timeout seconds have passed (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)
