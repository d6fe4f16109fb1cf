-- Live worker processes: a worker silent for longer than dead_for is presumed dead.
CREATE TABLE app_jobs.workers (
    id text PRIMARY KEY,
    host text,
    pid integer,
    tasks text[],
    heartbeat_interval interval NOT NULL DEFAULT interval '5 seconds',
    started_at timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    -- How new jobs wake it: listen (notifications arrive), silent (its LISTEN hears
    -- nothing, e.g. behind a transaction-mode pooler: it polls), poll (it was started
    -- without LISTEN); NULL until the worker has found out.
    wakeup text,
    CONSTRAINT workers_id_check CHECK (length(id) BETWEEN 1 AND 256),
    CONSTRAINT workers_heartbeat_interval_check CHECK (
        heartbeat_interval > interval '0'
    ),
    CONSTRAINT workers_wakeup_check CHECK (wakeup IN ('listen', 'silent', 'poll'))
);

COMMENT ON TABLE app_jobs.workers IS
'Registered workers and their heartbeats; reap_dead_workers frees the silent ones';

-- Silent workers first, for the reaper.
CREATE INDEX workers_last_heartbeat_idx ON app_jobs.workers (last_heartbeat);
