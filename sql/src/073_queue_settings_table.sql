-- Per named queue: how many of its jobs may run at once (1, a serial queue, by default).
CREATE TABLE app_jobs.queue_settings (
    queue_name text PRIMARY KEY,
    max_concurrency integer NOT NULL DEFAULT 1,
    CONSTRAINT queue_settings_max_concurrency_check CHECK (max_concurrency >= 1)
);

COMMENT ON TABLE app_jobs.queue_settings IS
'Queues allowed more than one running job; absent means serial (1)';
