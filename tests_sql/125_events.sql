-- jobs:stopped and jobs:bundle_stopped payloads stay within NOTIFY's 8000-byte limit whatever the job (huge payloads, 256-character origins, long names): every path that sends them succeeds. Delivery itself needs a commit and is covered by pytest.
BEGIN;
\ir setup.psql
SELECT plan(16);

-- The check below means something: a NOTIFY payload over the limit is refused at once.
SELECT throws_ok(
    $$SELECT pg_notify('jobs:stopped', repeat('x', 8000))$$, '22023', NULL,
    'pg_notify refuses a payload of 8000 bytes (so a successful notify proves a small payload)'
);

-- A job row as big as it gets: 1 MB payload, 10,000-character origin (more than the table
-- allows), longest task identifier.
SELECT lives_ok(
    $$SELECT app_jobs._notify_job_stopped(
        ROW(9000000000, NULL, 'q', repeat('t', 126), json_build_object('blob', repeat('p', 1000000)),
            0, now(), 1, 1, NULL, repeat('e', 100000), NULL, NULL, now(), now(), NULL, NULL, NULL,
            NULL, repeat('o', 10000), 9000000000, 0, TRUE)::app_jobs.jobs,
        'failed', TRUE)$$,
    'notify_job_stopped: the payload, last_error and origin beyond 256 characters are left out'
);
-- (What it sends, ids and names only, is received by a listener in
-- tests_py/test_notify.py: pgTAP cannot receive notifications.)
SELECT ok(
    octet_length(json_build_object(
        'id', 9223372036854775807, 'task', repeat('é', 126), 'outcome', 'cancelled',
        'will_retry', FALSE, 'bundle_id', 9223372036854775807, 'origin', repeat('é', 256)
    )::text) < 1000,
    'the largest possible jobs:stopped payload is under 1000 bytes'
);

-- Every path that stops a job, on jobs with huge payloads and the longest origin.
CREATE FUNCTION pg_temp.big(p_task text, p_max integer DEFAULT 25) RETURNS bigint LANGUAGE sql AS $$
    SELECT id FROM app_jobs.add_job(
        identifier := p_task, payload := json_build_object('blob', repeat('p', 200000)),
        origin := repeat('é', 256), max_attempts := p_max, run_at := now() - interval '1 minute'
    );
$$;
SELECT pg_temp.big('ev_done') AS done \gset
SELECT pg_temp.big('ev_retry', 2) AS retry \gset
SELECT pg_temp.big('ev_cancel') AS cancel \gset
SELECT id AS dependent FROM app_jobs.add_job(identifier := 'ev_dep', origin := repeat('é', 256),
    payload := json_build_object('blob', repeat('p', 200000)), depends_on := ARRAY[:retry]::bigint[]) \gset
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.get_jobs('w1', ARRAY['ev_done', 'ev_retry'], batch_size := 5)),
    2, 'w1 claims two big jobs'
);
SELECT lives_ok(format($$SELECT app_jobs.complete_job('w1', %s)$$, :done), 'complete_job: jobs:stopped completed');
SELECT lives_ok(format($$SELECT app_jobs.fail_job('w1', %s, repeat('e', 100000))$$, :retry),
    'fail_job with retries left: jobs:stopped will_retry');
UPDATE app_jobs.jobs SET run_at = now() - interval '1 second' WHERE id = :retry;
SELECT is((app_jobs.get_job('w1', ARRAY['ev_retry'])).id, :retry::bigint, 'claimed again');
SELECT lives_ok(format($$SELECT app_jobs.fail_job('w1', %s, repeat('e', 100000))$$, :retry),
    'fail_job for good: jobs:stopped failed, and its dependent''s jobs:stopped cancelled');
SELECT is(
    (SELECT array_agg(status ORDER BY job_id) FROM app_jobs.job_history),
    ARRAY['completed', 'failed', 'cancelled'],
    'all three stops happened'
);
SELECT lives_ok(format($$SELECT app_jobs.cancel_job(%s)$$, :cancel), 'cancel_job: jobs:stopped cancelled');
SELECT is(app_jobs.cancel_job(:dependent), NULL, 'the dependent is gone already');

-- jobs:bundle_stopped: ids, type, origin and outcome; not the follow-up's payload.
SELECT id AS b FROM app_jobs.add_bundle(
    repeat('b', 126),
    jsonb_build_array(jsonb_build_object('identifier', 'ev_bundled', 'payload',
        jsonb_build_object('blob', repeat('p', 200000)))),
    repeat('é', 256),
    jsonb_build_object('identifier', 'ev_after', 'payload', jsonb_build_object('blob', repeat('p', 200000)))
) \gset
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.get_jobs('w2', ARRAY['ev_bundled'])), 1, 'w2 claims the bundled job'
);
SELECT lives_ok(
    format($$SELECT app_jobs.complete_job('w2', %s)$$, (SELECT id FROM app_jobs.jobs WHERE bundle_id = :b)),
    'completing the last job sends jobs:stopped and jobs:bundle_stopped'
);
SELECT is(
    (SELECT ROW(outcome, followup_job_id IS NOT NULL)::text FROM app_jobs.job_bundles WHERE id = :b),
    ROW('completed', true)::text,
    'the bundle stopped and its follow-up was enqueued'
);
SELECT ok(
    octet_length(json_build_object(
        'id', 9223372036854775807, 'bundle_type', repeat('é', 126), 'origin', repeat('é', 256),
        'outcome', 'completed', 'followup_job_id', 9223372036854775807
    )::text) < 1500,
    'the largest jobs:bundle_stopped payload of a valid bundle is under 1500 bytes'
);
-- A bundle origin over 256 characters is refused up front (so its event stays small).
SELECT throws_ok(
    format(
        $$SELECT app_jobs.add_bundle('long_origin', '[{"identifier": "ev_long", "origin": "x"}]', %L)$$,
        repeat('o', 9000)
    ),
    'PJ022', NULL,
    'add_bundle refuses a 9000-character origin'
);

SELECT * FROM finish();
ROLLBACK;
