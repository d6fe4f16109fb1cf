-- Every SQL example of the "Usage" section of seed 001 (@pgpm/database-jobs), run verbatim, and what each one does.
BEGIN;
\ir setup.psql
SELECT plan(41);

-- The examples refer to job 123 and scheduled job 1: start both sequences there.
-- (Inside this rolled-back transaction only.)
ALTER SEQUENCE app_jobs.jobs_id_seq RESTART WITH 123;
ALTER SEQUENCE app_jobs.scheduled_jobs_id_seq RESTART;

-- The examples, character for character as the seed document prints them.
CREATE TEMP TABLE examples (name text PRIMARY KEY, sql text NOT NULL);
INSERT INTO examples VALUES
('add_simple', $ex$-- Add a simple job
SELECT app_jobs.add_job(
  db_id := '5b720132-17d5-424d-9bcb-ee7b17c13d43'::uuid,
  identifier := 'send_email',
  payload := '{"to": "user@example.com", "subject": "Hello"}'::json
);$ex$),
('add_delayed', $ex$-- Add a job with priority and delayed execution
SELECT app_jobs.add_job(
  db_id := '5b720132-17d5-424d-9bcb-ee7b17c13d43'::uuid,
  identifier := 'generate_report',
  payload := '{"report_id": 123}'::json,
  run_at := now() + interval '1 hour',
  priority := 10,
  max_attempts := 5
);$ex$),
('add_keyed', $ex$-- Add a job with a unique key (upsert semantics)
SELECT app_jobs.add_job(
  db_id := '5b720132-17d5-424d-9bcb-ee7b17c13d43'::uuid,
  identifier := 'daily_summary',
  payload := '{"date": "2025-01-15"}'::json,
  job_key := 'daily_summary_2025_01_15',
  queue_name := 'reports'
);$ex$),
('get_job', $ex$-- Worker fetches next available job
SELECT * FROM app_jobs.get_job(
  worker_id := 'worker-1',
  task_identifiers := ARRAY['send_email', 'generate_report'],
  job_expiry := interval '4 hours'
);$ex$),
('complete_job', $ex$-- Mark job as complete
SELECT app_jobs.complete_job(
  worker_id := 'worker-1',
  job_id := 123
);$ex$),
('fail_job', $ex$-- Mark job as failed (will retry if attempts < max_attempts)
SELECT app_jobs.fail_job(
  worker_id := 'worker-1',
  job_id := 123,
  error_message := 'Connection timeout'
);$ex$),
('insert_scheduled', $ex$-- Schedule a job with cron-style timing
INSERT INTO app_jobs.scheduled_jobs (
  database_id,
  task_identifier,
  payload,
  schedule_info
) VALUES (
  '5b720132-17d5-424d-9bcb-ee7b17c13d43'::uuid,
  'cleanup_old_data',
  '{"days": 30}'::json,
  '{
    "hour": [2],
    "minute": [0],
    "dayOfWeek": [0, 1, 2, 3, 4, 5, 6]
  }'::json
);$ex$),
('add_scheduled', $ex$-- Schedule a job with a rule (every minute for 3 minutes)
SELECT app_jobs.add_scheduled_job(
  db_id := '5b720132-17d5-424d-9bcb-ee7b17c13d43'::uuid,
  identifier := 'heartbeat',
  payload := '{}'::json,
  schedule_info := json_build_object(
    'start', now() + interval '10 seconds',
    'end', now() + interval '3 minutes',
    'rule', '*/1 * * * *'
  )
);$ex$),
('run_scheduled', $ex$-- Run a scheduled job (creates a job in the jobs table)
SELECT * FROM app_jobs.run_scheduled_job(scheduled_job_id := 1);$ex$);

-- Run an example exactly as stored; return its (single) result row as jsonb.
CREATE FUNCTION pg_temp.run_example(p_name text) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_sql text := (SELECT sql FROM examples WHERE name = p_name);
    v_row record;
BEGIN
    IF v_sql ~ '\nINSERT ' THEN
        EXECUTE v_sql;
        RETURN NULL;
    END IF;
    EXECUTE v_sql INTO v_row;
    RETURN to_jsonb(v_row);
END;
$$;
CREATE TEMP TABLE results (n serial, name text, result jsonb);
CREATE FUNCTION pg_temp.run(p_name text) RETURNS jsonb LANGUAGE sql AS $$
    INSERT INTO results (name, result) VALUES (p_name, pg_temp.run_example(p_name))
    RETURNING result;
$$;

-- Adding Jobs.
SELECT lives_ok($$SELECT pg_temp.run('add_simple')$$, 'example "Add a simple job" runs');
SELECT is(
    (SELECT ROW(id, database_id, task_identifier, payload::text, priority, run_at, max_attempts,
                attempts, key, locked_by)::text
     FROM app_jobs.jobs WHERE task_identifier = 'send_email'),
    ROW(123::bigint, '5b720132-17d5-424d-9bcb-ee7b17c13d43'::uuid, 'send_email',
        '{"to": "user@example.com", "subject": "Hello"}', 0, now(), 25, 0, NULL::text,
        NULL::text)::text,
    'it added job 123: send_email for that database, defaults elsewhere'
);
SELECT is(
    (SELECT result -> 'add_job' ->> 'id' FROM results WHERE name = 'add_simple'), '123',
    'it returned the app_jobs.jobs row'
);
SELECT lives_ok($$SELECT pg_temp.run('add_delayed')$$, 'example "Add a job with priority and delayed execution" runs');
SELECT is(
    (SELECT ROW(id, task_identifier, payload::text, run_at, priority, max_attempts)::text
     FROM app_jobs.jobs WHERE task_identifier = 'generate_report'),
    ROW(124::bigint, 'generate_report', '{"report_id": 123}', now() + interval '1 hour', 10, 5)::text,
    'it added job 124, due in an hour, priority 10, 5 attempts'
);
SELECT lives_ok($$SELECT pg_temp.run('add_keyed')$$, 'example "Add a job with a unique key" runs');
SELECT is(
    (SELECT ROW(id, task_identifier, payload::text, key, queue_name)::text
     FROM app_jobs.jobs WHERE task_identifier = 'daily_summary'),
    ROW(125::bigint, 'daily_summary', '{"date": "2025-01-15"}', 'daily_summary_2025_01_15',
        'reports')::text,
    'it added job 125 with its key in queue reports'
);
SELECT lives_ok($$SELECT pg_temp.run('add_keyed')$$, 'running the keyed example again works');
SELECT is(
    (SELECT result -> 'add_job' ->> 'id' FROM results WHERE name = 'add_keyed' ORDER BY n DESC LIMIT 1),
    '125',
    'upsert semantics: the second run returns the same job 125'
);
SELECT is(
    (SELECT count(*)::int FROM app_jobs.jobs WHERE key = 'daily_summary_2025_01_15'), 1,
    'still one job with that key'
);
SELECT is(
    (SELECT job_count FROM app_jobs.job_queues WHERE queue_name = 'reports'), 1,
    'queue reports counts it once'
);
SELECT is((SELECT count(*)::int FROM app_jobs.jobs), 3, 'three jobs in all');

-- Getting Jobs (Worker Side).
SELECT lives_ok($$SELECT pg_temp.run('get_job')$$, 'example "Worker fetches next available job" runs');
SELECT is(
    (SELECT result ->> 'id' FROM results WHERE name = 'get_job' ORDER BY n DESC LIMIT 1), '123',
    'it returned job 123 (generate_report is not due, daily_summary is not asked for)'
);
SELECT is(
    (SELECT ROW(locked_by, locked_at, attempts)::text FROM app_jobs.jobs WHERE id = 123),
    ROW('worker-1', now(), 1)::text,
    'job 123 is locked by worker-1, first attempt'
);
SELECT lives_ok($$SELECT pg_temp.run('get_job')$$, 'the same example again');
SELECT ok(
    (SELECT bool_and(value = 'null'::jsonb) FROM results, jsonb_each(result)
     WHERE n = (SELECT max(n) FROM results)),
    '"Returns NULL if no jobs available": every column is NULL'
);

-- Failing Jobs (run before "Completing Jobs" so that job 123 still exists for it).
SELECT lives_ok($$SELECT pg_temp.run('fail_job')$$, 'example "Mark job as failed" runs');
SELECT is(
    (SELECT result -> 'fail_job' ->> 'id' FROM results WHERE name = 'fail_job'), '123',
    'it returned job 123'
);
SELECT is(
    (SELECT ROW(last_error, locked_by, attempts, max_attempts, is_available, run_at)::text
     FROM app_jobs.jobs WHERE id = 123),
    ROW('Connection timeout', NULL::text, 1, 25, true, now() + exp(1) * interval '1 second')::text,
    'job 123 records the error, is unlocked and will retry after its backoff'
);
SELECT lives_ok($$SELECT pg_temp.run('get_job')$$, 'the worker asks again');
SELECT is(
    (SELECT result ->> 'id' FROM results WHERE n = (SELECT max(n) FROM results)), NULL,
    'nothing: job 123 waits for its backoff'
);
UPDATE app_jobs.jobs SET run_at = now() WHERE id = 123;
SELECT lives_ok($$SELECT pg_temp.run('get_job')$$, 'once due, the worker fetches again');
SELECT is(
    (SELECT ROW(result ->> 'id', result ->> 'attempts')::text FROM results
     WHERE n = (SELECT max(n) FROM results)),
    ROW('123', '2')::text,
    'job 123 is claimed for its second attempt'
);

-- Completing Jobs.
SELECT lives_ok($$SELECT pg_temp.run('complete_job')$$, 'example "Mark job as complete" runs');
SELECT is(
    (SELECT result -> 'complete_job' ->> 'id' FROM results WHERE name = 'complete_job'), '123',
    'it returned job 123'
);
SELECT is((SELECT count(*)::int FROM app_jobs.jobs WHERE id = 123), 0, 'job 123 is gone');
SELECT lives_ok($$SELECT pg_temp.run('complete_job')$$, 'completing it again does not fail');
SELECT is(
    (SELECT result -> 'complete_job' ->> 'id' FROM results WHERE n = (SELECT max(n) FROM results)),
    NULL,
    'but returns no job'
);

-- Scheduled Jobs.
SELECT lives_ok($$SELECT pg_temp.run('insert_scheduled')$$, 'example "Schedule a job with cron-style timing" runs');
SELECT is(
    (SELECT ROW(id, database_id, task_identifier, payload::text, schedule_info::jsonb, priority,
                max_attempts)::text
     FROM app_jobs.scheduled_jobs WHERE task_identifier = 'cleanup_old_data'),
    ROW(1::bigint, '5b720132-17d5-424d-9bcb-ee7b17c13d43'::uuid, 'cleanup_old_data',
        '{"days": 30}', '{"hour": [2], "minute": [0], "dayOfWeek": [0, 1, 2, 3, 4, 5, 6]}'::jsonb,
        0, 25)::text,
    'it added scheduled job 1 with its cron-style schedule_info'
);
SELECT lives_ok($$SELECT pg_temp.run('add_scheduled')$$, 'example "Schedule a job with a rule" runs');
SELECT is(
    (SELECT ROW(id, database_id, task_identifier, payload::text)::text
     FROM app_jobs.scheduled_jobs WHERE task_identifier = 'heartbeat'),
    ROW(2::bigint, '5b720132-17d5-424d-9bcb-ee7b17c13d43'::uuid, 'heartbeat', '{}')::text,
    'it added scheduled job 2: heartbeat'
);
SELECT is(
    (SELECT schedule_info::jsonb FROM app_jobs.scheduled_jobs WHERE task_identifier = 'heartbeat'),
    jsonb_build_object(
        'start', now() + interval '10 seconds', 'end', now() + interval '3 minutes',
        'rule', '*/1 * * * *'
    ),
    'with start, end and rule in schedule_info'
);
SELECT is(
    (SELECT result -> 'add_scheduled_job' ->> 'id' FROM results WHERE name = 'add_scheduled'), '2',
    'it returned the app_jobs.scheduled_jobs row'
);
SELECT count(*) AS jobs_before FROM app_jobs.jobs \gset
SELECT lives_ok($$SELECT pg_temp.run('run_scheduled')$$, 'example "Run a scheduled job" runs');
SELECT is(
    (SELECT count(*) FROM app_jobs.jobs), :jobs_before::bigint + 1, 'it created one job'
);
SELECT is(
    (SELECT ROW(database_id, task_identifier, payload::text, run_at, attempts)::text
     FROM app_jobs.jobs WHERE id = (SELECT (result ->> 'id')::bigint FROM results WHERE name = 'run_scheduled')),
    ROW('5b720132-17d5-424d-9bcb-ee7b17c13d43'::uuid, 'cleanup_old_data', '{"days": 30}', now(), 0)::text,
    'the job (returned as an app_jobs.jobs row) is cleanup_old_data, due now'
);
SELECT is(
    (SELECT last_scheduled_id FROM app_jobs.scheduled_jobs WHERE id = 1),
    (SELECT (result ->> 'id')::bigint FROM results WHERE name = 'run_scheduled'),
    'scheduled job 1 records the job it spawned'
);

-- The "Job Processing Pattern" calls get_job and complete_job positionally.
SELECT id AS my FROM app_jobs.add_job(identifier := 'my_task') \gset
SELECT is(
    (SELECT id FROM app_jobs.get_job('worker-1', ARRAY['my_task'])), :my::bigint,
    'positional get_job(''worker-1'', ARRAY[''my_task''])'
);
SELECT is(
    (app_jobs.complete_job('worker-1', :my)).id, :my::bigint,
    'positional complete_job(''worker-1'', job_id)'
);

SELECT * FROM finish();
ROLLBACK;
