"""Every SQL statement the Python side sends, in one place.

The worker and the admin command only call functions of the app_jobs schema; the
decisions about which job runs, retries or fails are made there.
"""

# The columns are pgjobs.Job's fields in this order (job.py's _ROW_FIELDS): the worker
# builds each Job from the row tuple.
CLAIM_JOBS = """
SELECT id, task_identifier, queue_name, payload, priority, run_at, attempts,
       max_attempts, key, database_id, created_at, timeout
FROM app_jobs.get_jobs(%(worker_id)s, %(tasks)s, %(job_expiry)s, %(batch_size)s)
"""

FINISH_JOBS = "SELECT job_id, attempt, status FROM app_jobs.finish_jobs(%s, %s)"

# Whether the installed SQL has finish_jobs' array form (0.6.0); the worker sends the
# JSON form (FINISH_JOBS) to an older install, e.g. while a rolling upgrade runs.
FINISH_JOB_ARRAYS_FOUND = """
SELECT to_regprocedure('app_jobs.finish_jobs(text, bigint[], integer[], text[], text[], '
                       'jsonb[], jsonb[])') IS NOT NULL AS found
"""

# The worker's form: the outcomes as parallel arrays. When every outcome of a batch is a
# completion without a result, only the ids and attempts are sent (the rest NULL).
FINISH_JOB_ARRAYS = """
SELECT job_id, attempt, status FROM app_jobs.finish_jobs(
    %s, %s::bigint[], %s::integer[], %s::text[], %s::text[], %s::jsonb[], %s::jsonb[]
)
"""

SET_PROGRESS = """
SELECT app_jobs.set_progress(%s, u.id, u.progress, u.stage, u.attempt)
FROM unnest(%s::bigint[], %s::integer[], %s::text[], %s::integer[])
    AS u (id, progress, stage, attempt)
ORDER BY u.id
"""

REGISTER_WORKER = """
SELECT app_jobs.register_worker(%s, %s, %s, %s::text[], make_interval(secs => %s))
"""

UNREGISTER_WORKER = "SELECT app_jobs.unregister_worker(%s)"

HEARTBEAT = "SELECT job_id, attempt, cancel_requested FROM app_jobs.worker_heartbeat(%s)"

REAP_DEAD_WORKERS = """
SELECT worker_id, job_id, status
FROM app_jobs.reap_dead_workers(make_interval(secs => %s))
"""

# Run in a transaction without statement_timeout (a large backlog goes in one statement).
PURGE_HISTORY = "SELECT app_jobs.purge_job_history() AS purged"

# The limits of each statement on the worker's work, delivery and heartbeat sessions, in
# milliseconds as text ('0': none), for that statement's transaction only (sent in one
# pipeline with it: nothing stays in the session, which a pooler may hand to others).
SET_LOCAL_LIMITS = """
SELECT set_config('statement_timeout', %s, true),
       set_config('lock_timeout', %s, true),
       set_config('idle_in_transaction_session_timeout', %s, true)
"""

# A new session's first statement (does it answer?).
PING = "SELECT 1"

# The LISTEN connection idles by design: never an idle-session or statement limit on it.
# Session settings: made only once a probe proved that this is a session of our own.
SET_LISTEN_SESSION_TIMEOUTS = """
SELECT set_config('idle_in_transaction_session_timeout', %s, false),
       set_config('statement_timeout', '0', false),
       set_config('idle_session_timeout', '0', false)
"""

# Before PostgreSQL 14 there is no idle_session_timeout.
SET_LISTEN_SESSION_TIMEOUTS_PG13 = """
SELECT set_config('idle_in_transaction_session_timeout', %s, false),
       set_config('statement_timeout', '0', false)
"""

NOTIFICATION_QUEUE_USAGE = "SELECT pg_notification_queue_usage() AS usage"

RELEASE_JOBS = "SELECT app_jobs.release_jobs(%s, %s::bigint[])"

HELD_JOB_IDS = "SELECT id FROM app_jobs.jobs WHERE locked_by = %s"

SCHEDULER_TICK = "SELECT count(*) AS spawned FROM app_jobs.run_due_scheduled_jobs()"

# The job channels: LISTENed only on a session proved to be the worker's own.
LISTEN = ('LISTEN "jobs:insert"', 'LISTEN "jobs:cancel"')

# Which server process runs this statement (pooled clients may share one, and one pooled
# client may move between them).
BACKEND_PID = "SELECT pg_backend_pid()"

# Does a notification sent from the work connection reach the LISTEN connection? (Behind
# a transaction-mode pooler it does not: the LISTEN stayed in a pooled server session.)
# One simple query: the LISTEN and the pid come from the same server process.
LISTEN_PROBE = 'SELECT pg_backend_pid(); LISTEN "jobs:probe"'
PROBE_CHANNEL = "jobs:probe"
PROBE = "SELECT pg_notify('jobs:probe', %s)"
UNLISTEN_PROBE = 'SELECT pg_backend_pid(); UNLISTEN "jobs:probe"'

SET_WORKER_WAKEUP = "SELECT app_jobs.set_worker_wakeup(%s, %s)"

CANCEL_CHANNEL = "jobs:cancel"

ADD_JOB = """
SELECT id FROM app_jobs.add_job(
    db_id := coalesce(%(db_id)s::uuid,
                      nullif(current_setting('jwt.claims.database_id', true), '')::uuid),
    identifier := %(identifier)s,
    payload := %(payload)s::json,
    job_key := %(job_key)s,
    queue_name := %(queue_name)s,
    run_at := %(run_at)s::timestamptz,
    max_attempts := %(max_attempts)s,
    priority := %(priority)s,
    timeout := %(timeout)s::interval,
    job_key_mode := coalesce(%(job_key_mode)s, 'replace'),
    origin := %(origin)s,
    depends_on := %(depends_on)s::bigint[]
)
"""


def _array(name: str, type_: str) -> str:
    """One array argument of ADD_JOBS: %(name)b, the values, or when every job has the
    same value %(name_all)s, filled out to %(n)s elements on the server."""
    return (
        f"CASE WHEN %({name}_all)s::{type_} IS NULL THEN %({name})b::{type_}[] "
        f"ELSE array_fill(%({name}_all)s::{type_}, ARRAY[%(n)s::integer]) END"
    )


# Python's None for db_id means the claim (as in ADD_JOB), element by element; the
# payloads come as one JSON array (one encoding on each side, no per-element quoting), and
# a field with one value for every job as that value (no array to encode and send).
ADD_JOBS = f"""
SELECT id FROM app_jobs.add_jobs(
    identifiers := {_array("identifier", "text")},
    payloads := ARRAY(
        SELECT x.e FROM json_array_elements(%(payload)s::json) WITH ORDINALITY AS x (e, n)
        ORDER BY x.n
    ),
    db_ids := CASE WHEN %(db_id_all)s::uuid IS NULL THEN (
        SELECT array_agg(
            coalesce(d, nullif(current_setting('jwt.claims.database_id', true), '')::uuid)
            ORDER BY x.n
        )
        FROM unnest(%(db_id)b::uuid[]) WITH ORDINALITY AS x (d, n)
    ) ELSE array_fill(%(db_id_all)s::uuid, ARRAY[%(n)s::integer]) END,
    queue_names := {_array("queue_name", "text")},
    run_ats := {_array("run_at", "timestamptz")},
    max_attempts := {_array("max_attempts", "integer")},
    priorities := {_array("priority", "integer")},
    job_keys := {_array("job_key", "text")},
    timeouts := {_array("timeout", "interval")},
    origins := {_array("origin", "text")},
    job_key_mode := coalesce(%(job_key_mode)s, 'replace')
)
"""

INSTALLED_EXTENSION = "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pgjobs'"

AVAILABLE_EXTENSION_VERSIONS = (
    "SELECT version FROM pg_catalog.pg_available_extension_versions WHERE name = 'pgjobs'"
)

PLAIN_INSTALL_VERSION = """
SELECT CASE WHEN to_regprocedure('app_jobs.pgjobs_version()') IS NOT NULL
            THEN app_jobs.pgjobs_version() END
"""

SCHEMA_EXISTS = "SELECT to_regnamespace('app_jobs') IS NOT NULL"

CREATE_EXTENSION = "CREATE EXTENSION pgjobs"

UPDATE_EXTENSION = "ALTER EXTENSION pgjobs UPDATE"

STATUS = """
SELECT
    s.task_identifier,
    coalesce(s.queue_name, '') AS queue_name,
    s.waiting,
    s.scheduled,
    s.running,
    s.retrying,
    s.failed,
    s.oldest_waiting,
    s.blocked,
    s.completed_per_minute,
    s.failed_per_minute
FROM app_jobs.queue_stats AS s
ORDER BY 1, 2
"""

STATUS_WORKERS = """
SELECT w.id, w.host, w.pid, now() - w.last_heartbeat AS heartbeat_age,
       w.last_heartbeat < now() - 3 * w.heartbeat_interval AS stale, w.wakeup
FROM app_jobs.workers AS w
ORDER BY w.id
"""

NOTIFICATION_QUEUE = "SELECT pg_notification_queue_usage()"

STATUS_SCHEDULES = "SELECT count(*) FROM app_jobs.scheduled_jobs"

STATUS_FAILING_SCHEDULES = """
SELECT s.id, s.task_identifier, s.last_error, now() - s.last_error_at AS error_age
FROM app_jobs.scheduled_jobs AS s
WHERE s.last_error IS NOT NULL
ORDER BY s.id
"""

FAILED_JOB_IDS = """
SELECT id FROM app_jobs.jobs
WHERE locked_at IS NULL AND attempts >= max_attempts
  AND (%(task)s::text IS NULL OR task_identifier = %(task)s)
ORDER BY id
"""

# retry_job starts each still permanently failed job afresh: attempts 0, no last_error.
RETRY_JOBS = """
SELECT r.id
FROM app_jobs.jobs AS j
CROSS JOIN LATERAL app_jobs.retry_job(j.id) AS r
WHERE j.id = ANY(%s::bigint[]) AND j.locked_at IS NULL AND j.attempts >= j.max_attempts
    AND r.id IS NOT NULL
ORDER BY r.id
"""

REMOVE_JOBS = "SELECT id FROM app_jobs.complete_jobs(%s::bigint[])"

ADD_BUNDLE = """
SELECT id FROM app_jobs.add_bundle(
    bundle_type := %(bundle_type)s,
    jobs := %(jobs)s,
    origin := %(origin)s,
    followup := %(followup)s,
    db_id := coalesce(%(db_id)s::uuid,
                      nullif(current_setting('jwt.claims.database_id', true), '')::uuid)
)
"""

JOB_OUTCOME = """
SELECT status, result, last_error FROM app_jobs.job_status WHERE id = %s
"""

LISTEN_STOPPED = ('LISTEN "jobs:stopped"', 'LISTEN "jobs:bundle_stopped"')

UNLISTEN_STOPPED = ('UNLISTEN "jobs:stopped"', 'UNLISTEN "jobs:bundle_stopped"')

SET_IGNORE_ENQUEUES = "SELECT set_config('pgjobs.ignore_enqueues', %s, true)"

GET_IGNORE_ENQUEUES = "SELECT current_setting('pgjobs.ignore_enqueues', true)"
