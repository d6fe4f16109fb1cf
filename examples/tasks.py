"""Demo handlers for `make demo`: emails, reports, a flaky job, an ordered queue."""

import asyncio
import time

import pgjobs


@pgjobs.task
async def send_email(payload, job):
    await asyncio.sleep(0.05)
    print(f"  -> email to {payload['to']} (priority {job.priority})", flush=True)


@pgjobs.task("generate_report")
def generate_report(payload, job):
    time.sleep(0.1)
    print(f"  -> report {payload['report_id']} generated", flush=True)


@pgjobs.task
def flaky_api_call(payload, job):
    if job.attempts < 3:
        raise ConnectionError(f"upstream timed out (attempt {job.attempts})")
    print(f"  -> flaky call succeeded on attempt {job.attempts}", flush=True)


@pgjobs.task
async def ledger_entry(payload, job):
    await asyncio.sleep(0.02)
    print(f"  -> ledger step {payload['step']} (queue {job.queue_name})", flush=True)


@pgjobs.task
def welcome_user(payload, job):
    print(f"  -> welcome {payload['name']} (added by a trigger on demo_users)", flush=True)
