-- Finished jobs (completed, permanently failed, cancelled), kept for history_retention.
-- Partitioned by finish time, one partition per UTC day (job_history_pYYYYMMDD, made
-- ahead by _ensure_history_partitions), so retention drops whole days instead of
-- deleting rows; job_history_default takes any row no day partition covers.
CREATE TABLE app_jobs.job_history (
    id bigserial,
    job_id bigint NOT NULL,
    database_id uuid,
    task_identifier text NOT NULL,
    queue_name text,
    key text,
    payload json NOT NULL,
    priority integer NOT NULL,
    status text NOT NULL,
    attempts integer NOT NULL,
    max_attempts integer NOT NULL,
    result jsonb,
    last_error text,
    error_data jsonb,
    worker_id text,
    created_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    origin text,
    bundle_id bigint,
    -- A partitioned table's key must hold its partition key; ids stay unique anyway
    -- (one sequence).
    CONSTRAINT job_history_pkey PRIMARY KEY (id, finished_at),
    CONSTRAINT job_history_status_check CHECK (
        status IN ('completed', 'failed', 'cancelled')
    )
) PARTITION BY RANGE (finished_at);

COMMENT ON TABLE app_jobs.job_history IS
'One row per job that reached a final state, partitioned by finished_at (UTC days); '
'purged by purge_job_history';
COMMENT ON COLUMN app_jobs.job_history.result IS 'What the handler returned (completed jobs)';
COMMENT ON COLUMN app_jobs.job_history.error_data IS
'Structured detail of the last error (exception type, traceback)';

-- Oldest first, for purging.
CREATE INDEX job_history_finished_at_idx ON app_jobs.job_history (finished_at);

-- A job's records, for lookups by job id.
CREATE INDEX job_history_job_id_idx ON app_jobs.job_history (job_id);

-- Rows no day partition covers (an insert never fails for want of a partition);
-- _ensure_history_partitions moves them into day partitions as it makes them.
CREATE TABLE app_jobs.job_history_default PARTITION OF app_jobs.job_history DEFAULT;
