-- The queue itself: one row per waiting, running or permanently failed job.
CREATE TABLE app_jobs.jobs (
    id bigserial PRIMARY KEY,
    database_id uuid,
    queue_name text,
    task_identifier text NOT NULL,
    payload json NOT NULL DEFAULT '{}'::json,
    priority integer NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 25,
    key text,
    last_error text,
    locked_at timestamptz,
    locked_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    progress integer,
    stage text,
    cancel_requested_at timestamptz,
    timeout interval,
    origin text,
    bundle_id bigint,
    blocked_by integer NOT NULL DEFAULT 0,
    is_available boolean NOT NULL GENERATED ALWAYS AS (
        locked_at IS NULL AND attempts < max_attempts AND blocked_by = 0
    ) STORED,
    CONSTRAINT jobs_task_identifier_check CHECK (
        length(task_identifier) BETWEEN 1 AND 126
    ),
    CONSTRAINT jobs_queue_name_check CHECK (
        length(queue_name) BETWEEN 1 AND 126
    ),
    CONSTRAINT jobs_key_check CHECK (length(key) BETWEEN 1 AND 512),
    CONSTRAINT jobs_max_attempts_check CHECK (max_attempts >= 1),
    CONSTRAINT jobs_progress_check CHECK (progress BETWEEN 0 AND 100),
    CONSTRAINT jobs_stage_check CHECK (length(stage) <= 1000),
    CONSTRAINT jobs_timeout_check CHECK (timeout > interval '0'),
    CONSTRAINT jobs_origin_check CHECK (length(origin) BETWEEN 1 AND 256),
    CONSTRAINT jobs_blocked_by_check CHECK (blocked_by >= 0)
);

COMMENT ON TABLE app_jobs.jobs IS
'Jobs waiting, running, or kept after their last failed attempt';
COMMENT ON COLUMN app_jobs.jobs.priority IS 'Lower numbers run first';
COMMENT ON COLUMN app_jobs.jobs.key IS
'Optional unique key: add_job with the same key replaces a waiting job';
COMMENT ON COLUMN app_jobs.jobs.progress IS 'Percent done (0-100) reported by the running handler';
COMMENT ON COLUMN app_jobs.jobs.stage IS 'What the running handler says it is doing';
COMMENT ON COLUMN app_jobs.jobs.cancel_requested_at IS
'Set by cancel_job on a running job: its worker cancels the handler; never retried';
COMMENT ON COLUMN app_jobs.jobs.timeout IS
'Longest an attempt may run before the worker cancels it (NULL: the task default)';
COMMENT ON COLUMN app_jobs.jobs.origin IS 'Free text: where the job came from';
COMMENT ON COLUMN app_jobs.jobs.bundle_id IS 'The bundle (app_jobs.job_bundles) it belongs to';
COMMENT ON COLUMN app_jobs.jobs.blocked_by IS
'How many of the jobs it depends on have not completed yet';
COMMENT ON COLUMN app_jobs.jobs.is_available IS
'Unlocked, attempts left, no pending dependency: the rows the claim index covers';

-- Claim order, restricted to rows a worker could take.
CREATE INDEX jobs_claim_idx ON app_jobs.jobs (priority, run_at, id)
WHERE is_available;

-- One job per key; jobs without a key (most) are not in the index at all, so an insert or
-- a claim of one costs an index entry less.
CREATE UNIQUE INDEX jobs_key_key ON app_jobs.jobs (key) WHERE key IS NOT NULL;

-- Running jobs by worker, for release and unlock.
CREATE INDEX jobs_locked_by_idx ON app_jobs.jobs (locked_by)
WHERE locked_by IS NOT NULL;

-- Running jobs by lock age, for reclaiming expired locks.
CREATE INDEX jobs_locked_at_idx ON app_jobs.jobs (locked_at)
WHERE locked_at IS NOT NULL;

-- Available jobs of named queues in claim order, to find each queue's head.
CREATE INDEX jobs_queue_head_idx ON app_jobs.jobs (queue_name, priority, run_at, id)
WHERE is_available AND queue_name IS NOT NULL;

-- Available jobs by tenant in claim order: with tenant_fairness on, the claim steps from
-- tenant to tenant through it and reads each tenant's head (app_jobs._fair_candidates).
CREATE INDEX jobs_tenant_claim_idx ON app_jobs.jobs (database_id, priority, run_at, id)
WHERE is_available;
