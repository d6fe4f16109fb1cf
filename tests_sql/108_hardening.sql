-- Hardening of 0.5.0 in one session (the races are in tests_py/test_tenant_races.py): job keys, schedule keys and depends_on belong to one tenant (PJ030, nothing changed, for trusted callers too); a 100,000-job dependency chain is cancelled at once (no recursion); one dead worker that cannot be reaped does not stop the others; one bad schedule does not stop the scheduler tick (error kept on its row, visible in metrics); bounds: job_expiry (PJ040), stage (PJ039), schedules that never fire (PJ042), IANA zones only (PJ010), start/end 1970-9999 and schedule_info size (PJ008); permanently_fail_jobs on a failed job; notifications skipped above notify_max_queue_usage and counted; pgjobs_enqueue_any acts for every tenant.
BEGIN;
\ir setup.psql
SELECT plan(73);

SET LOCAL jwt.claims.database_id = '';
\set a '''00000000-0000-0000-0000-00000000000a'''
\set b '''00000000-0000-0000-0000-00000000000b'''

-- 1. Job keys belong to the tenant of the job holding them, whoever calls (the owner here).
SELECT id AS bk FROM app_jobs.add_job(db_id := :b, identifier := 'k', job_key := 'bkey', payload := '{"b": 1}') \gset
SELECT to_jsonb(j) AS bk_row FROM app_jobs.jobs AS j WHERE j.id = :bk \gset
SELECT throws_ok(
    format('SELECT app_jobs.add_job(db_id := %L, identifier := %L, job_key := %L, job_key_mode := %L)', :a, 'k', 'bkey', m),
    'PJ030', 'job key bkey belongs to another tenant''s job',
    format('job_key_mode %s for A with B''s key: PJ030', m)
)
FROM unnest(ARRAY['replace', 'preserve_run_at', 'unsafe_dedupe']) AS m;
SELECT throws_ok(
    format('SELECT app_jobs.add_job(identifier := %L, job_key := %L)', 'k', 'bkey'),
    'PJ030', NULL, 'no tenant (NULL) with B''s key: PJ030'
);
SELECT is(
    (SELECT to_jsonb(j) FROM app_jobs.jobs AS j WHERE j.id = :bk), :'bk_row'::jsonb,
    'B''s keyed job is unchanged'
);
-- B's key on a running job: A cannot strip it either.
SELECT is((app_jobs.get_job('w_k', ARRAY['k'])).id, :bk::bigint, 'B''s keyed job runs');
SELECT throws_ok(
    format('SELECT app_jobs.add_job(db_id := %L, identifier := %L, job_key := %L)', :a, 'k', 'bkey'),
    'PJ030', NULL, 'A with the key of B''s running job: PJ030'
);
SELECT is(
    (SELECT ROW(key, max_attempts, locked_by)::text FROM app_jobs.jobs WHERE id = :bk),
    ROW('bkey', 25, 'w_k')::text,
    'the running job keeps its key and its attempts'
);
SELECT is(
    (app_jobs.add_job(db_id := :b, identifier := 'k', job_key := 'bkey')).key, 'bkey',
    'B itself replaces its running job''s key as before (a new job)'
);

-- Schedule keys alike.
SELECT id AS bs FROM app_jobs.add_scheduled_job(
    db_id := :b, identifier := 's', job_key := 'bsched', schedule_info := '{"rule": "@daily"}'
) \gset
SELECT throws_ok(
    format(
        'SELECT app_jobs.add_scheduled_job(db_id := %L, identifier := %L, job_key := %L, schedule_info := %L)',
        :a, 'takeover', 'bsched', '{"rule": "@hourly"}'
    ),
    'PJ030', 'schedule key bsched belongs to another tenant''s schedule',
    'add_scheduled_job for A with B''s schedule key: PJ030'
);
SELECT is(
    (SELECT ROW(database_id, task_identifier, schedule_info::text)::text FROM app_jobs.scheduled_jobs WHERE id = :bs),
    ROW(:b::uuid, 's', '{"rule": "@daily"}')::text,
    'B''s schedule is unchanged'
);

-- depends_on: only the job's own tenant; another tenant's job is neither named nor locked.
SELECT id AS bdep FROM app_jobs.add_job(db_id := :b, identifier := 'dep') \gset
SELECT count(*) AS before_dep FROM app_jobs.jobs \gset
SELECT throws_ok(
    format('SELECT app_jobs.add_job(db_id := %L, identifier := %L, depends_on := ARRAY[%s]::bigint[])', :a, 'after', :bdep),
    'PJ030', format('depends_on names job %s, which belongs to another tenant', :bdep),
    'depends_on a job of another tenant: PJ030'
);
SELECT throws_ok(
    format('SELECT app_jobs.add_job(db_id := %L, identifier := %L, depends_on := ARRAY[999999999]::bigint[])', :a, 'after'),
    'PJ023', NULL, 'depends_on a job that does not exist: still PJ023'
);
SELECT is((SELECT count(*) FROM app_jobs.jobs), :before_dep::bigint, 'neither added a job');
SELECT is(
    (app_jobs.add_job(db_id := :b, identifier := 'after', depends_on := ARRAY[:bdep]::bigint[])).blocked_by,
    1, 'B may depend on B''s job'
);

-- 2. A chain of 100,000 jobs, each depending on the one before, cancelled at once when
-- its root fails for good (built directly: add_job one by one would take minutes).
INSERT INTO app_jobs.jobs (id, task_identifier, blocked_by)
SELECT 900000000 + g, 'chain', (g > 0)::integer FROM generate_series(0, 100000) AS g;
INSERT INTO app_jobs.job_dependencies (job_id, depends_on)
SELECT 900000000 + g, 900000000 + g - 1 FROM generate_series(1, 100000) AS g;
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.permanently_fail_jobs(ARRAY[900000000]::bigint[], 'root broke')),
    1, 'the root of the chain fails for good'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE task_identifier = 'chain'), 1,
    'all 100,000 dependents are gone'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.job_history
     WHERE task_identifier = 'chain' AND status = 'cancelled'),
    100000, 'each has a cancelled history record'
);
SELECT is(
    (SELECT ROW(last_error, error_data ->> 'dependency_status')::text FROM app_jobs.job_history
     WHERE job_id = 900000001),
    ROW('dependency 900000000 failed', 'failed')::text,
    'the first names the failed root'
);
SELECT is(
    (SELECT ROW(last_error, error_data ->> 'dependency_id')::text FROM app_jobs.job_history
     WHERE job_id = 900100000),
    ROW('dependency 900099999 cancelled', '900099999')::text,
    'the last names the cancelled job before it'
);
SELECT is_empty(
    $$SELECT 1 FROM app_jobs.job_dependencies WHERE job_id > 900000000$$,
    'no dependency row is left behind'
);
-- A diamond: every path is followed once.
SELECT id AS r FROM app_jobs.add_job(identifier := 'dia') \gset
SELECT id AS l FROM app_jobs.add_job(identifier := 'dia', depends_on := ARRAY[:r]::bigint[]) \gset
SELECT id AS m FROM app_jobs.add_job(identifier := 'dia', depends_on := ARRAY[:r]::bigint[]) \gset
SELECT id AS z FROM app_jobs.add_job(identifier := 'dia', depends_on := ARRAY[:l, :m]::bigint[]) \gset
SELECT is(app_jobs.cancel_job(:r), 'cancelled', 'the top of a diamond is cancelled');
SELECT is(
    (SELECT array_agg(job_id ORDER BY job_id) FROM app_jobs.job_history WHERE task_identifier = 'dia'),
    ARRAY[:r, :l, :m, :z]::bigint[],
    'each job of the diamond stopped once'
);
SELECT is(
    (SELECT last_error FROM app_jobs.job_history WHERE job_id = :z),
    format('dependency %s cancelled', :l),
    'the bottom names the first of its dependencies'
);

-- 3. One dead worker that cannot be reaped does not stop the others.
SELECT app_jobs.register_worker('dead_1') AS _ \gset
SELECT app_jobs.register_worker('dead_2') AS _ \gset
SELECT id AS d1 FROM app_jobs.add_job(identifier := 'reap_me') \gset
SELECT id AS d2 FROM app_jobs.add_job(identifier := 'reap_me') \gset
SELECT (app_jobs.get_job('dead_1', ARRAY['reap_me'])).id AS _ \gset
SELECT (app_jobs.get_job('dead_2', ARRAY['reap_me'])).id AS _ \gset
UPDATE app_jobs.workers SET last_heartbeat = now() - interval '1 hour';
CREATE FUNCTION pg_temp.refuse_dead_1() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF old.locked_by = 'dead_1' THEN
        RAISE EXCEPTION 'planted failure' USING ERRCODE = '54001';
    END IF;
    RETURN new;
END;
$$;
CREATE TRIGGER refuse_dead_1 BEFORE UPDATE ON app_jobs.jobs
FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse_dead_1();
SELECT results_eq(
    $$SELECT worker_id, job_id, status FROM app_jobs.reap_dead_workers() ORDER BY worker_id$$,
    format($$VALUES ('dead_1'::text, NULL::bigint, 'error'::text), ('dead_2', %s, 'retrying')$$, :d2),
    'reap_dead_workers: dead_1 fails (error), dead_2 is reaped'
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.workers), ARRAY['dead_1'],
    'dead_1 stays registered for the next reap; dead_2 is gone'
);
SELECT is(
    (SELECT ROW(locked_by, attempts)::text FROM app_jobs.jobs WHERE id = :d1),
    ROW('dead_1', 1)::text, 'dead_1''s job is untouched (its subtransaction rolled back)'
);
DROP TRIGGER refuse_dead_1 ON app_jobs.jobs;
SELECT results_eq(
    $$SELECT worker_id, job_id, status FROM app_jobs.reap_dead_workers()$$,
    format($$VALUES ('dead_1'::text, %s::bigint, 'retrying'::text)$$, :d1),
    'once the failure is gone, dead_1 is reaped too'
);

-- 4. Scheduler tick: one bad schedule is skipped and recorded; the others run.
SELECT id AS good FROM app_jobs.add_scheduled_job(identifier := 'tick_good', schedule_info := '{"rule": "* * * * *"}') \gset
SELECT id AS big FROM app_jobs.add_scheduled_job(
    identifier := 'tick_big', payload := json_build_object('x', repeat('x', 2000)),
    schedule_info := '{"rule": "* * * * *"}'
) \gset
SELECT id AS broken FROM app_jobs.add_scheduled_job(identifier := 'tick_broken', schedule_info := '{"rule": "* * * * *"}') \gset
SELECT app_jobs.set_setting('max_payload_bytes', '1024') AS _ \gset
ALTER TABLE app_jobs.scheduled_jobs DISABLE TRIGGER _200_next_run_at;
UPDATE app_jobs.scheduled_jobs SET schedule_info = '{"rule": "61 * * * *"}' WHERE id = :broken;
ALTER TABLE app_jobs.scheduled_jobs ENABLE TRIGGER _200_next_run_at;
UPDATE app_jobs.scheduled_jobs SET next_run_at = now() - interval '30 seconds'
WHERE id IN (:good, :big, :broken);
SELECT is(
    (SELECT array_agg(task_identifier) FROM app_jobs.run_due_scheduled_jobs()),
    ARRAY['tick_good'], 'the tick enqueues the good schedule''s job and raises nothing'
);
SELECT alike(
    (SELECT last_error FROM app_jobs.scheduled_jobs WHERE id = :big),
    'PJ033: payload is % bytes, more than max_payload_bytes (1024) (the slot of % was skipped)',
    'the schedule whose job add_job refused keeps the error'
);
SELECT is(
    (SELECT ROW(next_run_at > now(), last_error_at = now())::text FROM app_jobs.scheduled_jobs WHERE id = :big),
    ROW(TRUE, TRUE)::text, 'and goes on with its next slot'
);
SELECT alike(
    (SELECT last_error FROM app_jobs.scheduled_jobs WHERE id = :broken),
    'PJ008: %(the schedule stopped)', 'the unparsable schedule keeps the error'
);
SELECT is(
    (SELECT next_run_at FROM app_jobs.scheduled_jobs WHERE id = :broken), NULL,
    'and stops until it is rewritten'
);
SELECT is(
    (SELECT last_error FROM app_jobs.scheduled_jobs WHERE id = :good), NULL,
    'the good schedule has no error'
);
SELECT ok(
    app_jobs.metrics() LIKE E'%\npgjobs_schedules_failing 2\n%',
    'metrics(): pgjobs_schedules_failing 2'
);
SELECT app_jobs.set_setting('max_payload_bytes', '262144') AS _ \gset
UPDATE app_jobs.scheduled_jobs SET next_run_at = now() - interval '1 second' WHERE id = :big;
SELECT is(
    (SELECT array_agg(task_identifier) FROM app_jobs.run_due_scheduled_jobs()),
    ARRAY['tick_big'], 'with the limit raised again its next slot is enqueued'
);
SELECT is(
    (SELECT ROW(last_error, last_error_at)::text FROM app_jobs.scheduled_jobs WHERE id = :big),
    ROW(NULL::text, NULL::timestamptz)::text, 'and its error is cleared'
);

-- 5. Bounds.
SELECT throws_ok(
    format('SELECT * FROM app_jobs.get_jobs(%L, NULL, %L)', 'w', v.e), 'PJ040',
    format('job_expiry must be positive and at most 100 years, got %s', v.e::interval),
    format('get_jobs job_expiry %s: PJ040', v.e)
)
FROM (VALUES ('0 seconds'), ('-1 hour'), ('1000000 years')) AS v (e);
SELECT throws_ok(
    $$SELECT * FROM app_jobs.get_job('w', NULL, '-5 minutes')$$, 'PJ040', NULL,
    'get_job job_expiry -5 minutes: PJ040'
);
SELECT lives_ok(
    $$SELECT * FROM app_jobs.get_jobs('w', NULL, '100 years')$$, 'job_expiry 100 years is fine'
);
SELECT id AS p FROM app_jobs.add_job(identifier := 'prog') \gset
SELECT (app_jobs.get_job('w_p', ARRAY['prog'])).id AS _ \gset
SELECT throws_ok(
    format('SELECT app_jobs.set_progress(%L, %s, 10, repeat(%L, 1001))', 'w_p', :p, 'x'),
    'PJ039', 'stage must be at most 1000 characters, got 1001', 'a stage of 1001 characters: PJ039'
);
SELECT is(
    app_jobs.set_progress('w_p', :p, 10, repeat(E'\x01', 1000)), TRUE,
    'a stage of 1000 control characters is taken (its notification stays under 8000 bytes)'
);
SELECT is(
    (SELECT length(stage) FROM app_jobs.jobs WHERE id = :p), 1000, 'and stored whole'
);
SELECT throws_ok(
    format('SELECT app_jobs.add_scheduled_job(identifier := %L, schedule_info := %L)', 'never', v.info),
    v.code, NULL, format('schedule %s: %s', v.info, v.code)
)
FROM (VALUES
    ('{"rule": "0 0 31 2 *"}', 'PJ042'),
    ('{"rule": "0 0 30 2 *"}', 'PJ042'),
    ('{"rule": "* * * * *", "end": "2001-01-01T00:00:00Z"}', 'PJ042'),
    ('{"rule": "* * * * *", "start": "infinity"}', 'PJ008'),
    ('{"rule": "* * * * *", "start": "294276-01-01"}', 'PJ008'),
    ('{"rule": "* * * * *", "end": "-infinity"}', 'PJ008'),
    ('{"rule": "* * * * *", "tz": "5"}', 'PJ010'),
    ('{"rule": "* * * * *", "tz": "+3"}', 'PJ010'),
    ('{"rule": "* * * * *", "tz": "UTC+3"}', 'PJ010'),
    ('{"rule": "* * * * *", "tz": "Mars/Olympus"}', 'PJ010')
) AS v (info, code);
SELECT throws_ok(
    format(
        'SELECT app_jobs.add_scheduled_job(identifier := %L, schedule_info := %L)', 'huge',
        json_build_object('rule', '* * * * *', 'note', repeat('n', 17000))
    ),
    'PJ008', NULL, 'schedule_info of more than 16384 bytes: PJ008'
);
SELECT is(
    (SELECT next_run_at IS NOT NULL FROM app_jobs.add_scheduled_job(
        identifier := 'zoned', schedule_info := v.info::json
    )),
    TRUE, format('schedule %s is taken', v.info)
)
FROM (VALUES
    ('{"rule": "0 9 * * *", "tz": "Europe/Berlin"}'),
    ('{"rule": "0 9 * * *", "tz": "europe/berlin"}'),
    ('{"rule": "0 9 * * *", "tz": "Etc/GMT+3"}'),
    ('{"rule": "0 9 * * *", "start": "1970-01-01T00:00:00Z", "end": "9999-01-01T00:00:00Z"}')
) AS v (info);

-- 6. permanently_fail_jobs on a job that already failed for good: new last_error, returned.
SELECT id AS f FROM app_jobs.add_job(identifier := 'pf', max_attempts := 1) \gset
SELECT (app_jobs.get_job('w_f', ARRAY['pf'])).id AS _ \gset
SELECT (app_jobs.fail_job('w_f', :f, 'first')).id AS _ \gset
SELECT count(*) AS pf_history FROM app_jobs.job_history WHERE job_id = :f \gset
SELECT is(
    (SELECT array_agg(ROW(id, last_error)::text) FROM app_jobs.permanently_fail_jobs(ARRAY[:f]::bigint[], 'second')),
    ARRAY[ROW(:f::bigint, 'second')::text],
    'permanently_fail_jobs returns the failed job with its new last_error'
);
SELECT is(
    (SELECT ROW(last_error, attempts, max_attempts)::text FROM app_jobs.jobs WHERE id = :f),
    ROW('second', 1, 1)::text, 'stored'
);
SELECT is(
    (SELECT count(*) FROM app_jobs.job_history WHERE job_id = :f), :pf_history::bigint,
    'it stopped once already: no second history record'
);

-- 7. notify_max_queue_usage takes a fraction (skipping itself needs a lagging listener in
-- another session: tests_py/test_notify_queue_full.py).
SELECT is(
    (SELECT array_agg(app_jobs.set_setting('notify_max_queue_usage', v.v) ORDER BY v.n)
     FROM unnest(ARRAY['0', '0.001', ' 1 ']) WITH ORDINALITY AS v (v, n)),
    ARRAY['0', '0.001', '1'], 'notify_max_queue_usage takes 0, 0.001 and 1'
);
SELECT throws_ok(
    format('SELECT app_jobs.set_setting(%L, %L)', 'notify_max_queue_usage', v),
    'PJ014', NULL, format('notify_max_queue_usage %s: PJ014', v)
)
FROM unnest(ARRAY['1.5', '-0.1', 'half', '']) AS v;
SELECT ok(
    app_jobs.metrics() LIKE format(
        E'%%\npgjobs_notifications_skipped_total %s\n%%', app_jobs._notifications_skipped_count()
    ),
    'metrics() reports the count of skipped notifications'
);

-- 8. pgjobs_enqueue_any enqueues and reads for every tenant, without worker rights.
CREATE ROLE pgjobs_t_any NOLOGIN IN ROLE pgjobs_enqueue_any;
SELECT count(*) + 2 AS all_jobs FROM app_jobs.jobs \gset
SET LOCAL ROLE pgjobs_t_any;
SELECT is(
    (app_jobs.add_job(db_id := :b, identifier := 'any_b')).database_id, :b::uuid,
    'enqueue_any without a claim: enqueues for B'
);
SELECT is(
    (app_jobs.add_job(identifier := 'any_none')).database_id, NULL,
    'and for no tenant'
);
SELECT is(
    (SELECT count(*) FROM app_jobs.jobs), :all_jobs::bigint,
    'and reads every tenant''s jobs (all of them, as the owner counts them)'
);
SELECT throws_ok(
    $$SELECT * FROM app_jobs.get_jobs('w_any')$$, '42501', NULL, 'but may not claim'
);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
