-- get_jobs and an expired claim whose cancel was requested: it ends cancelled (history, queue released, dependents cancelled, bundle counted), never retried; claims of registered workers, fresh claims and expired claims without a cancel request are left to their own paths; get_job and a custom job_expiry behave alike.
BEGIN;
\ir setup.psql
SELECT plan(21);

-- Fixtures, one task each so each is claimed by the worker meant to hold it.
--   c1   in queue qx, claimed by the unregistered w_dead, with a dependent d1
--   q2   waits in queue qx behind c1
--   cb   the only job of a bundle with a follow-up, claimed by w_dead
--   last on its last attempt (max_attempts 1), claimed by w_dead
--   reg  claimed by the registered (heartbeating) worker w_live
--   fr   claimed by the unregistered w_fresh, lock not expired
--   pe   claimed by w_dead, expired, no cancel request
SELECT id AS c1 FROM app_jobs.add_job(identifier := 'x_c1', queue_name := 'qx', run_at := now() - interval '2 minutes') \gset
SELECT id AS q2 FROM app_jobs.add_job(identifier := 'x_q2', queue_name := 'qx', run_at := now() - interval '1 minute') \gset
SELECT id AS d1 FROM app_jobs.add_job(identifier := 'x_d1', depends_on := ARRAY[:c1]::bigint[]) \gset
SELECT id AS bundle FROM app_jobs.add_bundle(
    'xb', '[{"identifier": "x_cb"}]', followup := '{"identifier": "x_after"}'
) \gset
SELECT id AS cb FROM app_jobs.jobs WHERE bundle_id = :bundle \gset
SELECT id AS last FROM app_jobs.add_job(identifier := 'x_last', max_attempts := 1) \gset
SELECT id AS reg FROM app_jobs.add_job(identifier := 'x_reg') \gset
SELECT id AS fr FROM app_jobs.add_job(identifier := 'x_fr') \gset
SELECT id AS pe FROM app_jobs.add_job(identifier := 'x_pe') \gset
SELECT app_jobs.register_worker('w_live', 'host', 1, ARRAY['x_reg'], interval '5 seconds') IS NULL AS _ \gset

SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.get_jobs(
        'w_dead', ARRAY['x_c1', 'x_cb', 'x_last', 'x_pe'], '4 hours', 10)),
    ARRAY[:c1, :cb, :last, :pe]::bigint[],
    'w_dead claims c1, cb, last and pe'
);
SELECT is((app_jobs.get_job('w_live', ARRAY['x_reg'])).id, :reg::bigint, 'w_live claims reg');
SELECT is((app_jobs.get_job('w_fresh', ARRAY['x_fr'])).id, :fr::bigint, 'w_fresh claims fr');
SELECT is(
    (SELECT array_agg(app_jobs.cancel_job(id) ORDER BY id) FROM unnest(ARRAY[:c1, :cb, :last, :reg, :fr]::bigint[]) AS id),
    ARRAY['cancelling', 'cancelling', 'cancelling', 'cancelling', 'cancelling'],
    'cancel requested for c1, cb, last, reg and fr while they run'
);
-- Every lock but fr's is five hours old: past the default job_expiry of 4 hours.
UPDATE app_jobs.jobs SET locked_at = now() - interval '5 hours' WHERE id IN (:c1, :cb, :last, :reg, :pe);
UPDATE app_jobs.job_queues SET locked_at = now() - interval '5 hours' WHERE queue_name = 'qx';
CREATE TEMP TABLE kept AS SELECT * FROM app_jobs.jobs WHERE id IN (:reg, :fr);

-- The claim: w2 asks for everything.
CREATE TEMP TABLE claimed AS SELECT * FROM app_jobs.get_jobs('w2', NULL, '4 hours', 20);
SELECT followup_job_id AS after FROM app_jobs.job_bundles WHERE id = :bundle \gset

SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE id IN (:c1, :cb, :last)), 0,
    'the expired cancel-requested claims left the jobs table'
);
SELECT is(
    (SELECT count(*)::integer FROM claimed WHERE id IN (:c1, :cb, :last)), 0,
    'none of them was claimed again'
);
SELECT results_eq(
    format($$SELECT job_id, status, attempts, worker_id, last_error, started_at
             FROM app_jobs.job_history WHERE job_id IN (%s, %s, %s) ORDER BY job_id$$, :c1, :cb, :last),
    format($$VALUES (%s::bigint, 'cancelled'::text, 1, 'w_dead'::text, 'cancelled'::text, now() - interval '5 hours'),
                    (%s, 'cancelled', 1, 'w_dead', 'cancelled', now() - interval '5 hours'),
                    (%s, 'cancelled', 1, 'w_dead', 'cancelled', now() - interval '5 hours')$$,
           :c1, :cb, :last),
    'each ends cancelled in history (the last attempt too, not failed), held by w_dead since its lock'
);
SELECT results_eq(
    format($$SELECT status, last_error FROM app_jobs.job_history WHERE job_id = %s$$, :d1),
    format($$VALUES ('cancelled'::text, 'dependency %s cancelled'::text)$$, :c1),
    'c1''s dependent d1 is cancelled with it'
);
SELECT is(
    (SELECT ROW(cancelled_count, completed_count, failed_count, outcome, followup_job_id IS NOT NULL)::text
     FROM app_jobs.job_bundles WHERE id = :bundle),
    ROW(1, 0, 0, 'failed', TRUE)::text,
    'cb''s bundle counts it cancelled, stops and enqueues its follow-up'
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM claimed),
    ARRAY[:q2, :pe, :after]::bigint[],
    'w2 claims q2 (queue qx was released), pe (expired, no cancel request) and the follow-up'
);
SELECT is(
    (SELECT ROW(locked_by, attempts)::text FROM app_jobs.jobs WHERE id = :pe),
    ROW('w2', 2)::text,
    'pe without a cancel request is retried: its second attempt'
);
SELECT results_eq(
    $$SELECT queue_name, job_count, locked_by FROM app_jobs.job_queues$$,
    $$VALUES ('qx'::text, 1, 'w2'::text)$$,
    'queue qx now counts q2 only, held by w2'
);
SELECT is(
    (SELECT jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j WHERE j.id IN (:reg, :fr)),
    (SELECT jsonb_agg(to_jsonb(k) ORDER BY k.id) FROM kept AS k),
    'reg (its worker heartbeats) and fr (lock not expired) are untouched, still cancelling'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.job_history WHERE job_id IN (:reg, :fr, :pe, :q2)), 0,
    'and have no history'
);
SELECT is(
    (SELECT array_agg(job_id ORDER BY job_id) FROM app_jobs.job_history),
    ARRAY[:c1, :d1, :cb, :last]::bigint[],
    'history holds exactly the four cancelled jobs'
);

-- A later claim, once w_live stopped heartbeating and was forgotten: reg ends too.
DELETE FROM app_jobs.workers WHERE id = 'w_live';
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.get_jobs('w3', NULL, '4 hours', 20)), 0,
    'w3 finds nothing to claim'
);
SELECT results_eq(
    format($$SELECT status, worker_id FROM app_jobs.job_history WHERE job_id = %s$$, :reg),
    $$VALUES ('cancelled'::text, 'w_live'::text)$$,
    'reg, its worker gone and its lock expired, ends cancelled'
);

-- get_job and a shorter job_expiry: a lock of 2 minutes is expired under 1 minute.
SELECT id AS s1 FROM app_jobs.add_job(identifier := 'x_s1') \gset
UPDATE app_jobs.jobs SET locked_at = now() - interval '2 minutes' WHERE id = :fr;
SELECT is(
    (app_jobs.get_job('w4', ARRAY['x_fr', 'x_s1'], interval '1 minute')).id, :s1::bigint,
    'get_job with job_expiry 1 minute: claims s1, not fr'
);
SELECT results_eq(
    format($$SELECT status, worker_id, attempts FROM app_jobs.job_history WHERE job_id = %s$$, :fr),
    $$VALUES ('cancelled'::text, 'w_fresh'::text, 1)$$,
    'fr, its 2-minute-old lock expired under that expiry, ends cancelled'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE id = :fr), 0, 'and is gone'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.job_history WHERE status <> 'cancelled'), 0,
    'nothing was recorded as completed or failed'
);

SELECT * FROM finish();
ROLLBACK;
