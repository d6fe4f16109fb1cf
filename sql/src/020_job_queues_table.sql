-- Named queues: how many jobs each holds and which worker runs it now.
CREATE TABLE app_jobs.job_queues (
    queue_name text PRIMARY KEY,
    job_count integer NOT NULL DEFAULT 0,
    locked_at timestamptz,
    locked_by text,
    running_count integer NOT NULL DEFAULT 0,
    CONSTRAINT job_queues_queue_name_check CHECK (
        length(queue_name) BETWEEN 1 AND 126
    )
);

COMMENT ON COLUMN app_jobs.job_queues.running_count IS
'Jobs of the queue running now; at most its max_concurrency (app_jobs.queue_settings)';

COMMENT ON TABLE app_jobs.job_queues IS
'One row per named queue that holds jobs; a queue runs one job at a time';

-- Queues held by a worker, for release and unlock.
CREATE INDEX job_queues_locked_by_idx ON app_jobs.job_queues (locked_by)
WHERE locked_by IS NOT NULL;
