-- Triggers on app_jobs tables: _900_notify_worker (statement-level AFTER INSERT, pg_notify on 'jobs:insert', once per statement) and _100_timestamps (created_at kept, updated_at set on every update).
BEGIN;
\ir setup.psql
SELECT plan(26);

-- 1. _900_notify_worker: definition. (What it sends, on which channel, is received by a
-- listener in tests_py/test_notify.py: pgTAP cannot receive notifications.)
SELECT has_trigger('app_jobs', 'jobs', '_900_notify_worker', 'jobs has _900_notify_worker');
SELECT trigger_is(
    'app_jobs', 'jobs', '_900_notify_worker', 'app_jobs', '_tg_notify_worker',
    '_900_notify_worker calls app_jobs._tg_notify_worker()'
);
-- tgtype bits: 1 row, 2 before, 4 insert, 8 delete, 16 update, 32 truncate, 64 instead.
SELECT is(
    (SELECT tgtype::int FROM pg_trigger
     WHERE tgrelid = 'app_jobs.jobs'::regclass AND tgname = '_900_notify_worker'),
    4,
    'it fires AFTER INSERT, FOR EACH STATEMENT, on nothing else'
);
SELECT is(
    (SELECT tgenabled::text FROM pg_trigger
     WHERE tgrelid = 'app_jobs.jobs'::regclass AND tgname = '_900_notify_worker'),
    'O',
    'it is enabled'
);
SELECT is(
    pg_get_triggerdef((SELECT oid FROM pg_trigger
        WHERE tgrelid = 'app_jobs.jobs'::regclass AND tgname = '_900_notify_worker')),
    'CREATE TRIGGER _900_notify_worker AFTER INSERT ON app_jobs.jobs FOR EACH STATEMENT '
    'EXECUTE FUNCTION app_jobs._tg_notify_worker()',
    'full trigger definition'
);

-- 2. It runs once per inserting statement, whatever the number of rows
-- (counted through the current transaction's function statistics).
SET LOCAL track_functions = 'pl';
CREATE FUNCTION pg_temp.notify_calls() RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce(
        (SELECT calls FROM pg_stat_xact_user_functions
         WHERE schemaname = 'app_jobs' AND funcname = '_tg_notify_worker'), 0);
$$;
SELECT is(pg_temp.notify_calls(), 0::bigint, 'no notification yet');
SELECT app_jobs.add_job(identifier := 'n') IS NULL AS _ \gset
SELECT is(pg_temp.notify_calls(), 1::bigint, 'add_job: one notification');
INSERT INTO app_jobs.jobs (task_identifier) SELECT 'n' FROM generate_series(1, 50);
SELECT is(pg_temp.notify_calls(), 2::bigint, 'a 50-row INSERT: one more notification, not 50');
UPDATE app_jobs.jobs SET priority = 1;
DELETE FROM app_jobs.jobs WHERE id IN (SELECT id FROM app_jobs.jobs LIMIT 3);
SELECT is(pg_temp.notify_calls(), 2::bigint, 'UPDATE and DELETE do not notify');
SELECT app_jobs.add_job(identifier := 'n', job_key := 'nk') IS NULL AS _ \gset
SELECT app_jobs.add_job(identifier := 'n', job_key := 'nk') IS NULL AS _ \gset
SELECT is(pg_temp.notify_calls(), 4::bigint, 'a keyed add_job notifies, also when it replaces a job');
SELECT app_jobs.get_job('w') IS NULL AS _ \gset
SELECT is(pg_temp.notify_calls(), 4::bigint, 'claiming does not notify');

-- 3. _100_timestamps on jobs.
SELECT id AS t1 FROM app_jobs.add_job(identifier := 'ts') \gset
SELECT is(
    (SELECT ROW(created_at, updated_at)::text FROM app_jobs.jobs WHERE id = :t1),
    ROW(now(), now())::text,
    'insert: created_at = updated_at = now()'
);
INSERT INTO app_jobs.jobs (task_identifier, created_at, updated_at)
VALUES ('ts_old', '2001-01-01 00:00:00+00', '2001-01-02 00:00:00+00')
RETURNING id AS t2 \gset
SELECT is(
    (SELECT ROW(created_at, updated_at)::text FROM app_jobs.jobs WHERE id = :t2),
    ROW('2001-01-01 00:00:00+00'::timestamptz, '2001-01-02 00:00:00+00'::timestamptz)::text,
    'insert keeps explicit timestamps'
);
UPDATE app_jobs.jobs SET priority = 5 WHERE id = :t2;
SELECT is(
    (SELECT ROW(created_at, updated_at)::text FROM app_jobs.jobs WHERE id = :t2),
    ROW('2001-01-01 00:00:00+00'::timestamptz, now())::text,
    'update: created_at kept, updated_at = now()'
);
UPDATE app_jobs.jobs SET created_at = '1990-01-01', updated_at = '1990-01-01' WHERE id = :t2;
SELECT is(
    (SELECT ROW(created_at, updated_at)::text FROM app_jobs.jobs WHERE id = :t2),
    ROW('2001-01-01 00:00:00+00'::timestamptz, now())::text,
    'update cannot overwrite created_at or backdate updated_at'
);
-- Every API path that updates a job touches updated_at.
-- (Set-up only: session_replication_role = replica skips the triggers for one UPDATE.)
CREATE FUNCTION pg_temp.age_job(p_id bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('session_replication_role', 'replica', true);
    UPDATE app_jobs.jobs SET updated_at = '2001-01-01' WHERE id = p_id;
    PERFORM set_config('session_replication_role', 'origin', true);
END;
$$;
SELECT pg_temp.age_job(:t2) AS _ \gset
SELECT is(
    (SELECT updated_at FROM app_jobs.jobs WHERE id = :t2), '2001-01-01'::timestamptz,
    'job aged for the set-up'
);
SELECT is(
    (app_jobs.get_job('w', ARRAY['ts_old'])).updated_at, now(), 'get_job touches updated_at'
);
SELECT pg_temp.age_job(:t2) AS _ \gset
SELECT is((app_jobs.fail_job('w', :t2)).updated_at, now(), 'fail_job touches updated_at');
SELECT pg_temp.age_job(:t2) AS _ \gset
SELECT is(
    (app_jobs.reschedule_jobs(ARRAY[:t2]::bigint[], priority := 1)).updated_at, now(),
    'reschedule_jobs touches updated_at'
);
SELECT is(
    (app_jobs.add_job(identifier := 'ts', job_key := 'tsk')).updated_at, now(),
    'a fresh keyed job has updated_at = now()'
);
SELECT id AS t3 FROM app_jobs.jobs WHERE key = 'tsk' \gset
SELECT pg_temp.age_job(:t3) AS _ \gset
SELECT is(
    (app_jobs.add_job(identifier := 'ts', job_key := 'tsk')).updated_at, now(),
    'a key upsert touches updated_at'
);
SELECT is(
    (SELECT created_at FROM app_jobs.jobs WHERE id = :t2), '2001-01-01 00:00:00+00'::timestamptz,
    'created_at survived all of it'
);

-- 4. _100_timestamps on scheduled_jobs.
INSERT INTO app_jobs.scheduled_jobs (task_identifier, schedule_info, created_at, updated_at)
VALUES ('s', '{}', '2001-01-01 00:00:00+00', '2001-01-02 00:00:00+00')
RETURNING id AS s1 \gset
UPDATE app_jobs.scheduled_jobs SET priority = 2, created_at = now() WHERE id = :s1;
SELECT is(
    (SELECT ROW(created_at, updated_at)::text FROM app_jobs.scheduled_jobs WHERE id = :s1),
    ROW('2001-01-01 00:00:00+00'::timestamptz, now())::text,
    'scheduled_jobs update: created_at kept, updated_at = now()'
);
SELECT is(
    (SELECT ROW(created_at, updated_at)::text
     FROM app_jobs.add_scheduled_job(identifier := 's2', schedule_info := '{}')),
    ROW(now(), now())::text,
    'scheduled_jobs insert: both now()'
);
SELECT is(
    (SELECT tgtype::int FROM pg_trigger
     WHERE tgrelid = 'app_jobs.jobs'::regclass AND tgname = '_100_timestamps'),
    1 + 2 + 16,
    'jobs _100_timestamps is BEFORE UPDATE FOR EACH ROW'
);
SELECT is(
    (SELECT tgtype::int FROM pg_trigger
     WHERE tgrelid = 'app_jobs.scheduled_jobs'::regclass AND tgname = '_100_timestamps'),
    1 + 2 + 16,
    'scheduled_jobs _100_timestamps is BEFORE UPDATE FOR EACH ROW'
);

SELECT * FROM finish();
ROLLBACK;
