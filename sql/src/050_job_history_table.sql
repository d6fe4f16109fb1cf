-- Finished jobs (completed, permanently failed, cancelled), kept for history_retention.
CREATE TABLE app_jobs.job_history (
    id bigserial PRIMARY KEY,
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
    CONSTRAINT job_history_status_check CHECK (
        status IN ('completed', 'failed', 'cancelled')
    )
);

COMMENT ON TABLE app_jobs.job_history IS
'One row per job that reached a final state; purged by purge_job_history';
COMMENT ON COLUMN app_jobs.job_history.result IS 'What the handler returned (completed jobs)';
COMMENT ON COLUMN app_jobs.job_history.error_data IS
'Structured detail of the last error (exception type, traceback)';

-- Oldest first, for purging.
CREATE INDEX job_history_finished_at_idx ON app_jobs.job_history (finished_at);

-- A job's records, for lookups by job id.
CREATE INDEX job_history_job_id_idx ON app_jobs.job_history (job_id);
