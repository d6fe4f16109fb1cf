-- Recurring job definitions; each spawns jobs in app_jobs.jobs.
CREATE TABLE app_jobs.scheduled_jobs (
    id bigserial PRIMARY KEY,
    database_id uuid,
    queue_name text,
    task_identifier text NOT NULL,
    payload json NOT NULL DEFAULT '{}'::json,
    priority integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 25,
    key text,
    locked_at timestamptz,
    locked_by text,
    schedule_info json NOT NULL,
    last_scheduled timestamptz,
    last_scheduled_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    next_run_at timestamptz,
    last_error text,
    last_error_at timestamptz,
    paused_at timestamptz,
    CONSTRAINT scheduled_jobs_key_key UNIQUE (key),
    CONSTRAINT scheduled_jobs_task_identifier_check CHECK (
        length(task_identifier) BETWEEN 1 AND 126
    ),
    CONSTRAINT scheduled_jobs_queue_name_check CHECK (
        length(queue_name) BETWEEN 1 AND 126
    ),
    CONSTRAINT scheduled_jobs_key_check CHECK (length(key) BETWEEN 1 AND 512),
    CONSTRAINT scheduled_jobs_max_attempts_check CHECK (max_attempts >= 1)
);

COMMENT ON COLUMN app_jobs.scheduled_jobs.next_run_at IS
'The next slot to enqueue (NULL once the schedule has ended)';
COMMENT ON COLUMN app_jobs.scheduled_jobs.last_error IS
'Why the scheduler tick could not enqueue this schedule''s latest due slot (NULL once one '
'succeeds); the tick skips it and goes on with the others';
COMMENT ON COLUMN app_jobs.scheduled_jobs.last_error_at IS 'When last_error happened';
COMMENT ON COLUMN app_jobs.scheduled_jobs.paused_at IS
'When pause_scheduled_job paused the schedule (NULL: active); the tick skips it until '
'resume_scheduled_job';
COMMENT ON TABLE app_jobs.scheduled_jobs IS
'Recurring jobs: schedule_info says when, the other columns what to enqueue';

-- Schedules held by a worker, for release.
CREATE INDEX scheduled_jobs_locked_by_idx ON app_jobs.scheduled_jobs (
    locked_by
) WHERE locked_by IS NOT NULL;

-- Due schedules, for the scheduler tick.
CREATE INDEX scheduled_jobs_next_run_at_idx ON app_jobs.scheduled_jobs (next_run_at)
WHERE next_run_at IS NOT NULL;
