-- Groups of jobs created together and tracked as one; a follow-up job may run at the end.
CREATE TABLE app_jobs.job_bundles (
    id bigserial PRIMARY KEY,
    database_id uuid,
    bundle_type text NOT NULL,
    origin text,
    job_count integer NOT NULL,
    completed_count integer NOT NULL DEFAULT 0,
    failed_count integer NOT NULL DEFAULT 0,
    cancelled_count integer NOT NULL DEFAULT 0,
    followup jsonb,
    followup_job_id bigint,
    outcome text,
    created_at timestamptz NOT NULL DEFAULT now(),
    stopped_at timestamptz,
    CONSTRAINT job_bundles_bundle_type_check CHECK (length(bundle_type) BETWEEN 1 AND 126),
    CONSTRAINT job_bundles_job_count_check CHECK (job_count >= 0),
    CONSTRAINT job_bundles_outcome_check CHECK (outcome IN ('completed', 'failed'))
);

COMMENT ON TABLE app_jobs.job_bundles IS
'Bundles: stopped (stopped_at, outcome) once every job completed, failed or was cancelled';
COMMENT ON COLUMN app_jobs.job_bundles.outcome IS
'completed when every job completed, else failed; NULL while jobs remain';
COMMENT ON COLUMN app_jobs.job_bundles.followup IS
'Job enqueued when the bundle stops: {identifier, payload, queue_name, priority, ...}';
