-- A label value escaped for the Prometheus text format: backslash, double quote, newline.
CREATE FUNCTION app_jobs._metrics_label(value text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT replace(
        replace(replace(coalesce(value, ''), E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n'
    );
$$;

COMMENT ON FUNCTION app_jobs._metrics_label IS
'Escape a Prometheus label value (backslash, double quote, newline); NULL gives ""';

-- The queue's state in the Prometheus text exposition format (for a scrape exporter, or
-- SELECT app_jobs.metrics() behind any HTTP endpoint): queue_stats, workers, the
-- notification queue, failing schedules. Samples of one family are contiguous, in label order.
CREATE FUNCTION app_jobs.metrics() RETURNS text
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
    WITH stats AS MATERIALIZED (
        SELECT
            app_jobs._metrics_label(q.task_identifier) AS task,
            app_jobs._metrics_label(q.queue_name) AS queue,
            q.waiting,
            q.scheduled,
            q.running,
            q.retrying,
            q.failed,
            q.blocked,
            q.oldest_waiting,
            q.completed_last_5m,
            q.failed_last_5m,
            q.cancelled_last_5m
        FROM app_jobs.queue_stats AS q
    ),

    workers AS (
        SELECT
            count(*) AS registered,
            count(*) FILTER (
                WHERE w.last_heartbeat < now() - 3 * w.heartbeat_interval
            ) AS stale
        FROM app_jobs.workers AS w
    ),

    families (family, name, kind, help) AS (
        VALUES
        (1, 'pgjobs_jobs', 'gauge', 'Jobs by task, queue and state (as in app_jobs.job_status)'),
        (
            2, 'pgjobs_oldest_waiting_seconds', 'gauge',
            'How long the longest-waiting runnable job of a task and queue has been due'
        ),
        (
            3, 'pgjobs_finished_last_5m', 'gauge',
            'Jobs that finished in the last 5 minutes by task and status (from job_history)'
        ),
        (4, 'pgjobs_history_enabled', 'gauge', '1 when job history is recorded, else 0'),
        (5, 'pgjobs_workers', 'gauge', 'Registered workers'),
        (
            6, 'pgjobs_workers_stale', 'gauge',
            'Registered workers silent for more than 3 heartbeat intervals'
        ),
        (
            7, 'pgjobs_notification_queue_usage', 'gauge',
            'Fraction of the LISTEN/NOTIFY queue in use (pg_notification_queue_usage)'
        ),
        (
            8, 'pgjobs_notifications_skipped_total', 'counter',
            'pgjobs notifications skipped: the NOTIFY queue was used up to notify_max_queue_usage'
        ),
        (
            9, 'pgjobs_schedules_failing', 'gauge',
            'Schedules whose latest due slot could not be enqueued (last_error set)'
        )
    ),

    samples (family, line) AS (
        SELECT
            1,
            format(
                'pgjobs_jobs{task="%s",queue="%s",state="%s"} %s', s.task, s.queue, v.state, v.n
            )
        FROM stats AS s
        CROSS JOIN LATERAL (
            VALUES
            ('waiting', s.waiting),
            ('scheduled', s.scheduled),
            ('running', s.running),
            ('retrying', s.retrying),
            ('failed', s.failed),
            ('blocked', s.blocked)
        ) AS v (state, n)
        UNION ALL
        SELECT
            2,
            format(
                'pgjobs_oldest_waiting_seconds{task="%s",queue="%s"} %s', s.task, s.queue,
                coalesce(round(extract(EPOCH FROM s.oldest_waiting), 3), 0)
            )
        FROM stats AS s
        UNION ALL
        SELECT
            3,
            format('pgjobs_finished_last_5m{task="%s",status="%s"} %s', t.task, v.status, v.n)
        FROM (
            SELECT
                s.task,
                sum(s.completed_last_5m) AS completed,
                sum(s.failed_last_5m) AS failed,
                sum(s.cancelled_last_5m) AS cancelled
            FROM stats AS s
            GROUP BY s.task
        ) AS t
        CROSS JOIN LATERAL (
            VALUES ('completed', t.completed), ('failed', t.failed), ('cancelled', t.cancelled)
        ) AS v (status, n)
        UNION ALL
        SELECT
            4,
            'pgjobs_history_enabled '
            || CASE WHEN app_jobs.setting('history') = 'on' THEN '1' ELSE '0' END
        UNION ALL
        SELECT 5, 'pgjobs_workers ' || w.registered FROM workers AS w
        UNION ALL
        SELECT 6, 'pgjobs_workers_stale ' || w.stale FROM workers AS w
        UNION ALL
        SELECT 7, 'pgjobs_notification_queue_usage ' || pg_notification_queue_usage()
        UNION ALL
        SELECT
            8, 'pgjobs_notifications_skipped_total ' || app_jobs._notifications_skipped_count()
        UNION ALL
        SELECT 9, 'pgjobs_schedules_failing ' || count(*)
        FROM app_jobs.scheduled_jobs AS s
        WHERE s.last_error IS NOT NULL
    ),

    lines (family, part, line) AS (
        SELECT f.family, 0, format('# HELP %s %s', f.name, f.help) FROM families AS f
        UNION ALL
        SELECT f.family, 1, format('# TYPE %s %s', f.name, f.kind) FROM families AS f
        UNION ALL
        SELECT s.family, 2, s.line FROM samples AS s
    )

    SELECT string_agg(l.line, E'\n' ORDER BY l.family, l.part, l.line COLLATE "C") || E'\n'
    FROM lines AS l;
$$;

COMMENT ON FUNCTION app_jobs.metrics IS
'Queue, worker and notification-queue gauges in the Prometheus text exposition format';
