-- Settings (defaults, set_setting, PJ014, history off writes nothing), purge_job_history and history_retention, the job_status view (every lifecycle state, each job once), waiting_jobs/failed_jobs/retry_job/delete_job (PJ020)/delete_finished_jobs, add_job's timeout (stored, PJ017, key upserts).
BEGIN;
\ir setup.psql
SELECT plan(81);

-- 1. Settings.
SELECT is_empty($$SELECT * FROM app_jobs.settings$$, 'no setting is stored at install');
SELECT is(app_jobs.setting('history'), 'on', 'history defaults to on');
SELECT is(app_jobs.setting('history_retention'), '7 days', 'history_retention defaults to 7 days');
SELECT is(app_jobs.setting('nonsense'), NULL, 'an unknown setting reads as NULL');

SELECT throws_ok(
    format('SELECT app_jobs.set_setting(%L, %L)', v.n, v.v), 'PJ014', NULL, 'PJ014: ' || v.what
)
FROM (VALUES
    ('unknown name', 'colour', 'on'),
    ('NULL name', NULL, 'on'),
    ('name in capitals', 'History', 'on'),
    ('history yes', 'history', 'yes'),
    ('history true', 'history', 'true'),
    ('history empty', 'history', ''),
    ('history NULL', 'history', NULL),
    ('retention not an interval', 'history_retention', 'a week'),
    ('retention empty', 'history_retention', ''),
    ('retention negative', 'history_retention', '-1 day'),
    ('retention negative overall', 'history_retention', '1 day -25 hours'),
    ('retention out of range', 'history_retention', '999999999999 years'),
    ('retention NULL', 'history_retention', NULL)
) AS v (what, n, v);
SELECT is_empty($$SELECT * FROM app_jobs.settings$$, 'refused settings store nothing');

SELECT lives_ok(
    $$SELECT app_jobs.set_setting('history_retention', '2 days')$$, 'set_setting history_retention 2 days'
);
SELECT is(app_jobs.setting('history_retention'), '2 days', 'history_retention reads 2 days');
SELECT lives_ok(
    $$SELECT app_jobs.set_setting(name := 'history', value := 'OFF')$$, 'set_setting history OFF'
);
SELECT is(app_jobs.setting('history'), 'off', 'history reads off (lower-cased)');

-- History off: finished jobs leave no record. (Written to the table directly as well, so
-- this part holds whether or not set_setting worked above.)
INSERT INTO app_jobs.settings (name, value) VALUES ('history', 'off')
ON CONFLICT (name) DO UPDATE SET value = excluded.value;
SELECT id AS o1 FROM app_jobs.add_job(identifier := 'o', run_at := now() - interval '3 minutes') \gset
SELECT id AS o2 FROM app_jobs.add_job(identifier := 'o', run_at := now() - interval '2 minutes', max_attempts := 1) \gset
SELECT id AS o3 FROM app_jobs.add_job(identifier := 'o', run_at := now() - interval '1 minutes') \gset
SELECT id AS o4 FROM app_jobs.add_job(identifier := 'o') \gset
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.get_jobs('w1', ARRAY['o'], batch_size := 3)), 3,
    'w1 claims o1, o2, o3'
);
SELECT is(
    (SELECT array_agg(status ORDER BY job_id) FROM app_jobs.finish_jobs('w1', format(
        '[{"id": %s, "attempt": 1}, {"id": %s, "attempt": 1, "outcome": "failed"},
         {"id": %s, "attempt": 1, "outcome": "cancelled"}]',
        :o1, :o2, :o3)::jsonb)),
    ARRAY['completed', 'failed', 'cancelled'],
    'with history off: completed, failed and cancelled as usual'
);
SELECT is(app_jobs.cancel_job(:o4), 'cancelled', 'and a waiting job cancelled');
SELECT is_empty($$SELECT * FROM app_jobs.job_history$$, 'but no history row is written');

INSERT INTO app_jobs.settings (name, value) VALUES ('history', 'on')
ON CONFLICT (name) DO UPDATE SET value = excluded.value;
SELECT id AS o5 FROM app_jobs.add_job(identifier := 'o') \gset
SELECT is(app_jobs.cancel_job(:o5), 'cancelled', 'history back on: a job is cancelled');
SELECT is(
    (SELECT array_agg(job_id) FROM app_jobs.job_history), ARRAY[:o5]::bigint[],
    'and recorded'
);

-- 2. purge_job_history keeps history_retention's worth.
DELETE FROM app_jobs.settings;
DELETE FROM app_jobs.job_history;
DELETE FROM app_jobs.jobs;
INSERT INTO app_jobs.job_history (job_id, task_identifier, payload, priority, status, attempts,
                                  max_attempts, created_at, finished_at)
SELECT 1000 + d, 'old', '{}', 0, 'completed', 1, 25, now() - d * interval '1 day',
       now() - d * interval '1 day'
FROM unnest(ARRAY[0, 1, 2, 6, 8, 30]) AS d;
SELECT is(app_jobs.purge_job_history(), 2, 'default retention (7 days): the 8- and 30-day-old rows go');
SELECT is(
    (SELECT array_agg(job_id ORDER BY job_id) FROM app_jobs.job_history),
    ARRAY[1000, 1001, 1002, 1006]::bigint[],
    'the rows of the last 7 days stay'
);
SELECT is(app_jobs.purge_job_history(), 0, 'purging again removes nothing');
INSERT INTO app_jobs.settings (name, value) VALUES ('history_retention', '36 hours');
SELECT is(app_jobs.purge_job_history(), 2, 'retention 36 hours: the 2- and 6-day-old rows go');
INSERT INTO app_jobs.settings (name, value) VALUES ('history_retention', '0')
ON CONFLICT (name) DO UPDATE SET value = excluded.value;
SELECT is(app_jobs.purge_job_history(), 1, 'retention 0: everything finished before now goes');
SELECT is(
    (SELECT array_agg(job_id) FROM app_jobs.job_history), ARRAY[1000]::bigint[],
    'a row finished at this very instant stays'
);
DELETE FROM app_jobs.settings;
DELETE FROM app_jobs.job_history;

-- 3. job_status: one row per job, in each lifecycle state.
SELECT id AS waiting FROM app_jobs.add_job(identifier := 's', run_at := now() - interval '1 minute') \gset
SELECT id AS scheduled FROM app_jobs.add_job(identifier := 's2', run_at := now() + interval '1 hour') \gset
SELECT id AS running FROM app_jobs.add_job(identifier := 'run', run_at := now() - interval '5 minutes') \gset
SELECT id AS retrying FROM app_jobs.add_job(identifier := 'fail', run_at := now() - interval '4 minutes') \gset
SELECT id AS failed FROM app_jobs.add_job(identifier := 'fail', run_at := now() - interval '3 minutes', max_attempts := 1) \gset
SELECT id AS completed FROM app_jobs.add_job(identifier := 'done', run_at := now() - interval '2 minutes', queue_name := 'qd') \gset
SELECT id AS cancelled FROM app_jobs.add_job(identifier := 's3') \gset
SELECT id AS revived FROM app_jobs.add_job(identifier := 'rev', run_at := now() - interval '1 minute', max_attempts := 1) \gset
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.get_jobs('w1', ARRAY['run', 'fail', 'done', 'rev'], batch_size := 10)),
    ARRAY[:running, :retrying, :failed, :completed, :revived]::bigint[],
    'w1 claims five jobs'
);
SELECT is(
    (SELECT array_agg(status ORDER BY job_id) FROM app_jobs.finish_jobs('w1', format('[
        {"id": %s, "attempt": 1, "outcome": "failed", "error": "try again"},
        {"id": %s, "attempt": 1, "outcome": "failed", "error": "no luck"},
        {"id": %s, "attempt": 1, "result": {"rows": 2}},
        {"id": %s, "attempt": 1, "outcome": "failed", "error": "first life"}]',
        :retrying, :failed, :completed, :revived)::jsonb)),
    ARRAY['retrying', 'failed', 'completed', 'failed'],
    'four outcomes reported'
);
SELECT is(app_jobs.cancel_job(:cancelled), 'cancelled', 'one waiting job cancelled');
-- revived failed for good, is retried by hand, and completes its second life.
SELECT is((app_jobs.retry_job(:revived)).attempts, 0, 'retry_job gives revived fresh attempts');
SELECT is((app_jobs.get_job('w2', ARRAY['rev'])).id, :revived::bigint, 'w2 claims it again');
SELECT is((app_jobs.complete_job('w2', :revived)).id, :revived::bigint, 'and completes it');

SELECT results_eq(
    $$SELECT id, task_identifier, status, attempts, worker_id, last_error FROM app_jobs.job_status ORDER BY id$$,
    format($$VALUES
        (%s::bigint, 's'::text, 'waiting'::text, 0, NULL::text, NULL::text),
        (%s, 's2', 'scheduled', 0, NULL, NULL),
        (%s, 'run', 'running', 1, 'w1', NULL),
        (%s, 'fail', 'retrying', 1, NULL, 'try again'),
        (%s, 'fail', 'failed', 1, NULL, 'no luck'),
        (%s, 'done', 'completed', 1, 'w1', NULL),
        (%s, 's3', 'cancelled', 0, NULL, 'cancelled'),
        (%s, 'rev', 'completed', 1, 'w2', NULL)$$,
        :waiting, :scheduled, :running, :retrying, :failed, :completed, :cancelled, :revived),
    'job_status: waiting, scheduled, running, retrying, failed, completed, cancelled, and the revived job completed'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.job_status),
    (SELECT count(DISTINCT id)::integer FROM app_jobs.job_status),
    'each job appears once'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.job_history WHERE job_id = :revived), 2,
    'although revived has two history rows (failed, then completed)'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.job_history WHERE job_id = :failed), 1,
    'and failed, still in the jobs table, has one'
);
SELECT results_eq(
    format($$SELECT result, started_at, finished_at, run_at FROM app_jobs.job_status WHERE id = %s$$, :completed),
    $$VALUES ('{"rows": 2}'::jsonb, now(), now(), NULL::timestamptz)$$,
    'a completed job shows its result, start and finish'
);
SELECT results_eq(
    format($$SELECT started_at, finished_at, run_at FROM app_jobs.job_status WHERE id = %s$$, :running),
    format($$VALUES (now(), NULL::timestamptz, now() - interval '5 minutes')$$),
    'a running job shows when it started and no finish'
);

-- 4. Management functions.
SELECT results_eq(
    $$SELECT id FROM app_jobs.waiting_jobs()$$,
    format($$VALUES (%s::bigint), (%s), (%s)$$, :waiting, :retrying, :scheduled),
    'waiting_jobs: the jobs that will run, in claim order (retrying and scheduled included)'
);
SELECT results_eq(
    $$SELECT id FROM app_jobs.waiting_jobs(ARRAY['s', 's2'])$$,
    format($$VALUES (%s::bigint), (%s)$$, :waiting, :scheduled),
    'waiting_jobs by task'
);
SELECT results_eq(
    $$SELECT id FROM app_jobs.waiting_jobs(max_rows := 1)$$,
    format($$VALUES (%s::bigint)$$, :waiting),
    'waiting_jobs max_rows'
);
SELECT id AS failed2 FROM app_jobs.add_job(identifier := 'other', max_attempts := 2) \gset
UPDATE app_jobs.jobs SET attempts = 2, last_error = 'x' WHERE id = :failed2;
SELECT results_eq(
    $$SELECT id FROM app_jobs.failed_jobs()$$,
    format($$VALUES (%s::bigint), (%s)$$, :failed2, :failed),
    'failed_jobs: permanently failed jobs, newest first'
);
SELECT results_eq(
    $$SELECT id FROM app_jobs.failed_jobs(ARRAY['fail'])$$,
    format($$VALUES (%s::bigint)$$, :failed),
    'failed_jobs by task'
);
SELECT is_empty($$SELECT * FROM app_jobs.failed_jobs(ARRAY['run'])$$, 'a running job is not failed');

SELECT is(
    (SELECT row(id, attempts, run_at, is_available)::text FROM app_jobs.retry_job(:failed)),
    row(:failed::bigint, 0, now(), true)::text,
    'retry_job: attempts 0, run now, available'
);
UPDATE app_jobs.jobs SET run_at = now() + interval '1 hour' WHERE id = :retrying;
SELECT is(
    (SELECT row(attempts, run_at)::text FROM app_jobs.retry_job(job_id := :retrying)),
    row(0, now())::text,
    'retry_job on a retrying job waiting for its backoff: runs now'
);
SELECT is(
    (SELECT status FROM app_jobs.job_status WHERE id = :failed), 'waiting',
    'a retried job starts afresh: waiting (its old errors stay in job_history)'
);
SELECT throws_ok(
    format('SELECT app_jobs.retry_job(%s)', :running), 'PJ020', NULL, 'PJ020: retry_job on a running job'
);
SELECT is((app_jobs.retry_job(-1)).id, NULL, 'retry_job on a missing job: NULL');
SELECT is((app_jobs.retry_job(:completed)).id, NULL, 'retry_job on a completed job: NULL');

SELECT id AS dq FROM app_jobs.add_job(identifier := 'del', queue_name := 'qdel') \gset
SELECT id AS dq2 FROM app_jobs.add_job(identifier := 'del', queue_name := 'qdel') \gset
SELECT is((app_jobs.delete_job(:dq)).id, :dq::bigint, 'delete_job returns the deleted job');
SELECT is((SELECT count(*)::integer FROM app_jobs.jobs WHERE id = :dq), 0, 'and it is gone');
SELECT is(
    (SELECT job_count FROM app_jobs.job_queues WHERE queue_name = 'qdel'), 1,
    'its queue counts one job less'
);
SELECT is((app_jobs.delete_job(:failed2)).id, :failed2::bigint, 'delete_job on a failed job');
SELECT throws_ok(
    format('SELECT app_jobs.delete_job(%s)', :running), 'PJ020', NULL, 'PJ020: delete_job on a running job'
);
SELECT is(
    (SELECT locked_by FROM app_jobs.jobs WHERE id = :running), 'w1', 'the running job is untouched'
);
SELECT is((app_jobs.delete_job(-1)).id, NULL, 'delete_job on a missing job: NULL');

-- delete_finished_jobs: history and permanently failed jobs older than older_than.
SELECT id AS pf FROM app_jobs.add_job(identifier := 'pf', max_attempts := 1) \gset
UPDATE app_jobs.jobs SET attempts = 1 WHERE id = :pf;
UPDATE app_jobs.job_history SET finished_at = now() - interval '3 days' WHERE job_id = :cancelled;
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.job_history), 6,
    'six history rows before (failed, completed, cancelled, revived twice, deleted)'
);
SELECT is(app_jobs.delete_finished_jobs('1 day'), 1, 'delete_finished_jobs(1 day): the 3-day-old row');
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE id = :pf), 1,
    'the job that failed just now stays'
);
SELECT is(app_jobs.delete_finished_jobs(), 6, 'delete_finished_jobs(): the five other history rows and pf');
SELECT is_empty($$SELECT * FROM app_jobs.job_history$$, 'history is empty');
SELECT results_eq(
    $$SELECT id FROM app_jobs.jobs ORDER BY id$$,
    format($$VALUES (%s::bigint), (%s), (%s), (%s), (%s), (%s)$$,
           :waiting, :scheduled, :running, :retrying, :failed, :dq2),
    'waiting, running and retried jobs are not touched'
);

-- 5. add_job's timeout.
SELECT is((app_jobs.add_job(identifier := 't')).timeout, NULL, 'timeout defaults to NULL');
SELECT is(
    (app_jobs.add_job(identifier := 't', timeout := interval '30 seconds')).timeout,
    interval '30 seconds', 'timeout is stored'
);
SELECT throws_ok(
    format('SELECT app_jobs.add_job(identifier := %L, timeout := %L)', 't', v.t), 'PJ017', NULL,
    'PJ017: timeout ' || v.t
)
FROM unnest(ARRAY['0', '-1 second']) AS v (t);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE task_identifier = 't'), 2,
    'refused jobs are not inserted'
);
SELECT id AS k FROM app_jobs.add_job(identifier := 'tk', job_key := 'tk', timeout := interval '1 minute') \gset
SELECT is(
    (SELECT row(id, timeout)::text FROM app_jobs.add_job(identifier := 'tk', job_key := 'tk', timeout := interval '1 minute')),
    row(:k::bigint, interval '1 minute')::text,
    'replacing a waiting keyed job with the same timeout keeps it'
);
SELECT is(
    (SELECT row(id, timeout)::text FROM app_jobs.add_job(identifier := 'tk', job_key := 'tk', timeout := interval '2 minutes')),
    row(:k::bigint, interval '2 minutes')::text,
    'replacing it with another timeout updates it'
);
SELECT is((app_jobs.get_job('w3', ARRAY['tk'])).id, :k::bigint, 'w3 runs the keyed job');
SELECT isnt(
    (app_jobs.add_job(identifier := 'tk', job_key := 'tk', timeout := interval '5 minutes')).id,
    :k::bigint,
    'adding the key while it runs inserts a new job'
);
SELECT results_eq(
    $$SELECT locked_by, timeout FROM app_jobs.jobs WHERE task_identifier = 'tk' ORDER BY id$$,
    $$VALUES ('w3'::text, interval '2 minutes'), (NULL, interval '5 minutes')$$,
    'the running job keeps its timeout; the new one has the new timeout'
);

SELECT * FROM finish();
ROLLBACK;
