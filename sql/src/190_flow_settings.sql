-- Set a task's retry policy, default max_attempts and timeout, and start-rate limit
-- (rate_limit starts per rate_interval, bursts up to rate_burst); the whole row is
-- replaced, so a setting left out goes back to its default. PJ024 on bad values, PJ035
-- for max_attempts above 10000, PJ038 for a timeout over 100 years (as add_job).
CREATE FUNCTION app_jobs.set_task_settings(
    task_identifier text,
    retry_kind text DEFAULT 'exponential',
    retry_base interval DEFAULT NULL,
    retry_cap interval DEFAULT NULL,
    retry_jitter double precision DEFAULT 0,
    retry_delays interval[] DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    timeout interval DEFAULT NULL,
    rate_limit integer DEFAULT NULL,
    rate_interval interval DEFAULT NULL,
    rate_burst integer DEFAULT NULL
) RETURNS app_jobs.task_settings
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_row app_jobs.task_settings;
BEGIN
    IF task_identifier IS NULL OR length(task_identifier) NOT BETWEEN 1 AND 126 THEN
        RAISE EXCEPTION 'task identifier must be 1 to 126 characters'
            USING ERRCODE = 'PJ001';
    END IF;
    -- The bounds add_job holds a job to, so a task default cannot make add_job (or the
    -- scheduler tick) refuse every job of the task later.
    IF set_task_settings.max_attempts > 10000 THEN
        RAISE EXCEPTION 'max_attempts must be at most 10000, got %',
            set_task_settings.max_attempts
            USING ERRCODE = 'PJ035';
    END IF;
    IF set_task_settings.timeout > interval '100 years' THEN
        RAISE EXCEPTION 'timeout must be at most 100 years, got %', set_task_settings.timeout
            USING ERRCODE = 'PJ038';
    END IF;
    IF coalesce(retry_kind, 'exponential') NOT IN ('exponential', 'linear', 'fixed', 'list')
        OR retry_kind = 'list' AND coalesce(cardinality(retry_delays), 0) = 0
        OR retry_base <= interval '0' OR retry_cap <= interval '0'
        OR NOT coalesce(retry_jitter, 0) BETWEEN 0 AND 1
        OR EXISTS (SELECT 1 FROM unnest(retry_delays) AS d WHERE d IS NULL OR d < interval '0')
        OR max_attempts < 1 OR timeout <= interval '0'
        OR (rate_limit IS NULL) <> (rate_interval IS NULL)
        OR rate_limit < 1 OR rate_interval <= interval '0' OR rate_burst < 1
        OR rate_burst IS NOT NULL AND rate_limit IS NULL THEN
        RAISE EXCEPTION 'invalid task settings for %', task_identifier
            USING ERRCODE = 'PJ024',
            HINT = 'retry_kind: exponential, linear, fixed or list (list needs retry_delays); '
            || 'intervals positive; retry_jitter 0 to 1; max_attempts >= 1; rate_limit '
            || 'and rate_interval together, both positive; rate_burst >= 1.';
    END IF;
    INSERT INTO app_jobs.task_settings AS ts (
        task_identifier, retry_kind, retry_base, retry_cap, retry_jitter, retry_delays,
        max_attempts, timeout, rate_limit, rate_interval, rate_burst, tokens, refilled_at
    ) VALUES (
        set_task_settings.task_identifier, coalesce(set_task_settings.retry_kind, 'exponential'),
        set_task_settings.retry_base, set_task_settings.retry_cap,
        coalesce(set_task_settings.retry_jitter, 0), set_task_settings.retry_delays,
        set_task_settings.max_attempts, set_task_settings.timeout,
        set_task_settings.rate_limit, set_task_settings.rate_interval,
        set_task_settings.rate_burst, 0, clock_timestamp()
    )
    ON CONFLICT ON CONSTRAINT task_settings_pkey DO UPDATE SET
        retry_kind = excluded.retry_kind,
        retry_base = excluded.retry_base,
        retry_cap = excluded.retry_cap,
        retry_jitter = excluded.retry_jitter,
        retry_delays = excluded.retry_delays,
        max_attempts = excluded.max_attempts,
        timeout = excluded.timeout,
        rate_limit = excluded.rate_limit,
        rate_interval = excluded.rate_interval,
        rate_burst = excluded.rate_burst,
        -- An unchanged rate limit keeps its bucket; a new one starts empty.
        tokens = CASE
            WHEN (ts.rate_limit, ts.rate_interval) IS NOT DISTINCT FROM
                (excluded.rate_limit, excluded.rate_interval) THEN ts.tokens
            ELSE 0
        END,
        refilled_at = CASE
            WHEN (ts.rate_limit, ts.rate_interval) IS NOT DISTINCT FROM
                (excluded.rate_limit, excluded.rate_interval) THEN ts.refilled_at
            ELSE clock_timestamp()
        END
    RETURNING * INTO v_row;
    RETURN v_row;
END;
$$;

COMMENT ON FUNCTION app_jobs.set_task_settings IS
'Per task: retry policy, default max_attempts/timeout, rate limit (PJ024 on bad values)';

-- Let a named queue run up to max_concurrency jobs at once (1, the default, is serial).
CREATE FUNCTION app_jobs.set_queue_concurrency(
    queue_name text,
    max_concurrency integer
) RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    IF queue_name IS NULL OR length(queue_name) NOT BETWEEN 1 AND 126 THEN
        RAISE EXCEPTION 'queue name must be 1 to 126 characters'
            USING ERRCODE = 'PJ002';
    END IF;
    IF max_concurrency IS NULL OR max_concurrency < 1 THEN
        RAISE EXCEPTION 'max_concurrency must be at least 1, got %',
            coalesce(max_concurrency::text, 'NULL')
            USING ERRCODE = 'PJ025';
    END IF;
    IF max_concurrency = 1 THEN
        DELETE FROM app_jobs.queue_settings AS qs
        WHERE qs.queue_name = set_queue_concurrency.queue_name;
    ELSE
        INSERT INTO app_jobs.queue_settings AS qs (queue_name, max_concurrency)
        VALUES (set_queue_concurrency.queue_name, set_queue_concurrency.max_concurrency)
        ON CONFLICT ON CONSTRAINT queue_settings_pkey
        DO UPDATE SET max_concurrency = excluded.max_concurrency;
    END IF;
    RETURN max_concurrency;
END;
$$;

COMMENT ON FUNCTION app_jobs.set_queue_concurrency IS
'How many jobs of a named queue may run at once (PJ025 below 1)';
