-- Per-task defaults: retry policy, max_attempts, timeout and a start-rate limit.
CREATE TABLE app_jobs.task_settings (
    task_identifier text PRIMARY KEY,
    retry_kind text NOT NULL DEFAULT 'exponential',
    retry_base interval,
    retry_cap interval,
    retry_jitter double precision NOT NULL DEFAULT 0,
    retry_delays interval[],
    max_attempts integer,
    timeout interval,
    rate_limit integer,
    rate_interval interval,
    rate_burst integer,
    tokens double precision,
    refilled_at timestamptz,
    CONSTRAINT task_settings_retry_kind_check CHECK (
        retry_kind IN ('exponential', 'linear', 'fixed', 'list')
    ),
    CONSTRAINT task_settings_retry_jitter_check CHECK (retry_jitter BETWEEN 0 AND 1),
    CONSTRAINT task_settings_max_attempts_check CHECK (max_attempts >= 1),
    CONSTRAINT task_settings_timeout_check CHECK (timeout > interval '0'),
    CONSTRAINT task_settings_rate_check CHECK (
        (rate_limit IS NULL) = (rate_interval IS NULL)
        AND rate_limit >= 1 AND rate_interval > interval '0'
    ),
    CONSTRAINT task_settings_rate_burst_check CHECK (rate_burst >= 1)
);

COMMENT ON TABLE app_jobs.task_settings IS
'Per task: retry schedule, default max_attempts/timeout, token-bucket start rate limit';
COMMENT ON COLUMN app_jobs.task_settings.tokens IS
'Rate limit bucket: starts available now (refilled at rate_limit per rate_interval)';
