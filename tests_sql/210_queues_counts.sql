-- job_queues bookkeeping: job_count exact on insert, multi-row insert, delete, queue change (UPDATE and key upsert), row created on first job and removed at zero, invariant under random operations.
BEGIN;
\ir setup.psql
SELECT plan(24);

CREATE FUNCTION pg_temp.counts() RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(queue_name || '=' || job_count, ',' ORDER BY queue_name), '')
    FROM app_jobs.job_queues;
$$;
CREATE FUNCTION pg_temp.truth() RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(queue_name || '=' || n, ',' ORDER BY queue_name), '')
    FROM (SELECT queue_name, count(*) AS n FROM app_jobs.jobs
          WHERE queue_name IS NOT NULL GROUP BY queue_name) AS s;
$$;

SELECT is(pg_temp.counts(), '', 'no queues to start with');
SELECT app_jobs.add_job(identifier := 't', queue_name := 'qa') IS NULL AS _ \gset
SELECT is(
    (SELECT ROW(queue_name, job_count, locked_at, locked_by)::text FROM app_jobs.job_queues),
    ROW('qa', 1, NULL::timestamptz, NULL::text)::text,
    'the first job of a queue creates its row, count 1, unlocked'
);
SELECT app_jobs.add_job(identifier := 't', queue_name := 'qa') IS NULL AS _ \gset
SELECT app_jobs.add_job(identifier := 't') IS NULL AS _ \gset
SELECT is(pg_temp.counts(), 'qa=2', 'a second job counts; a job without a queue makes no row');

INSERT INTO app_jobs.jobs (task_identifier, queue_name)
SELECT 't', CASE WHEN g <= 5 THEN 'qb' ELSE 'qa' END FROM generate_series(1, 7) AS g;
SELECT is(pg_temp.counts(), 'qa=4,qb=5', 'a multi-row insert counts every row');

DELETE FROM app_jobs.jobs WHERE id = (SELECT min(id) FROM app_jobs.jobs WHERE queue_name = 'qb');
SELECT is(pg_temp.counts(), 'qa=4,qb=4', 'a delete counts down');

UPDATE app_jobs.jobs SET queue_name = 'qb'
WHERE id = (SELECT min(id) FROM app_jobs.jobs WHERE queue_name = 'qa');
SELECT is(pg_temp.counts(), 'qa=3,qb=5', 'moving a job between queues moves its count');

UPDATE app_jobs.jobs SET queue_name = NULL
WHERE id = (SELECT min(id) FROM app_jobs.jobs WHERE queue_name = 'qa');
SELECT is(pg_temp.counts(), 'qa=2,qb=5', 'leaving a queue counts down');

UPDATE app_jobs.jobs SET queue_name = 'qc'
WHERE id = (SELECT min(id) FROM app_jobs.jobs WHERE queue_name IS NULL);
SELECT is(pg_temp.counts(), 'qa=2,qb=5,qc=1', 'joining a queue from none creates and counts it');

UPDATE app_jobs.jobs SET queue_name = queue_name, priority = priority + 1;
SELECT is(pg_temp.counts(), 'qa=2,qb=5,qc=1', 'updates that keep the queue change no count');

UPDATE app_jobs.jobs SET queue_name = 'qd' WHERE queue_name = 'qb';
SELECT is(pg_temp.counts(), 'qa=2,qc=1,qd=5', 'moving a whole queue: old row removed at zero');

DELETE FROM app_jobs.jobs WHERE queue_name = 'qa';
SELECT is(pg_temp.counts(), 'qc=1,qd=5', 'deleting all jobs of a queue removes its row');

-- Key upsert moving a job between queues.
SELECT id AS k1 FROM app_jobs.add_job(identifier := 't', job_key := 'k', queue_name := 'qe') \gset
SELECT is(pg_temp.counts(), 'qc=1,qd=5,qe=1', 'keyed job counted in qe');
SELECT app_jobs.add_job(identifier := 't', job_key := 'k', queue_name := 'qd') IS NULL AS _ \gset
SELECT is(pg_temp.counts(), 'qc=1,qd=6', 'upsert moved it to qd; the empty qe row is removed');

-- complete_job and a locked queue whose last job goes away.
SELECT id AS l1 FROM app_jobs.add_job(identifier := 'last', queue_name := 'ql') \gset
SELECT is((app_jobs.get_job('w', ARRAY['last'])).id, :l1::bigint, 'claim the only job of ql');
SELECT is(
    (SELECT ROW(job_count, locked_by)::text FROM app_jobs.job_queues WHERE queue_name = 'ql'),
    ROW(1, 'w')::text, 'ql is locked with one job'
);
SELECT is((app_jobs.complete_job('w', :l1)).id, :l1::bigint, 'complete it');
SELECT is(
    (SELECT count(*)::int FROM app_jobs.job_queues WHERE queue_name = 'ql'), 0,
    'the queue row is removed with its last job'
);
SELECT is(pg_temp.counts(), pg_temp.truth(), 'counts match the jobs table');

-- A queue row removed by hand: deleting or moving its jobs still works.
SELECT id AS h1 FROM app_jobs.add_job(identifier := 'h', queue_name := 'qh') \gset
SELECT id AS h2 FROM app_jobs.add_job(identifier := 'h', queue_name := 'qh') \gset
DELETE FROM app_jobs.job_queues WHERE queue_name = 'qh';
SELECT lives_ok(format('DELETE FROM app_jobs.jobs WHERE id = %s', :h1), 'deleting a job whose queue row is gone works');
SELECT lives_ok(
    format('UPDATE app_jobs.jobs SET queue_name = %L WHERE id = %s', 'qc', :h2),
    'moving it out of the missing queue works'
);
SELECT is(pg_temp.counts(), pg_temp.truth(), 'and the counts are right again');

-- Random inserts, moves and deletes: the counts always match the table.
SELECT setseed(0.42) AS _ \gset
DO $$
DECLARE
    v_q text[] := ARRAY['r1', 'r2', 'r3', 'r4', NULL];
BEGIN
    FOR i IN 1..300 LOOP
        CASE floor(random() * 4)::int
            WHEN 0 THEN
                PERFORM app_jobs.add_job(identifier := 'r', queue_name := v_q[1 + floor(random() * 5)::int]);
            WHEN 1 THEN
                UPDATE app_jobs.jobs SET queue_name = v_q[1 + floor(random() * 5)::int]
                WHERE id = (SELECT id FROM app_jobs.jobs WHERE task_identifier = 'r'
                            ORDER BY random() LIMIT 1);
            WHEN 2 THEN
                DELETE FROM app_jobs.jobs
                WHERE id = (SELECT id FROM app_jobs.jobs WHERE task_identifier = 'r'
                            ORDER BY random() LIMIT 1);
            ELSE
                PERFORM app_jobs.add_job(
                    identifier := 'r', job_key := 'rk' || floor(random() * 5)::int,
                    queue_name := v_q[1 + floor(random() * 5)::int]
                );
        END CASE;
    END LOOP;
END;
$$;
SELECT cmp_ok((SELECT count(*)::int FROM app_jobs.jobs WHERE task_identifier = 'r'), '>', 0, 'random run left jobs');
SELECT is(pg_temp.counts(), pg_temp.truth(), 'after 300 random operations counts match the jobs table');
SELECT is(
    (SELECT count(*)::int FROM app_jobs.job_queues WHERE job_count <= 0), 0,
    'no queue row with a zero count survives'
);

SELECT * FROM finish();
ROLLBACK;
