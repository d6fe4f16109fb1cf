-- How long a task's job waits after failed attempt number p_attempts: the task's retry
-- policy (task_settings), else the seed's exp(least(attempts, 10)) seconds.
CREATE FUNCTION app_jobs._retry_delay(p_task text, p_attempts integer) RETURNS interval
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_policy app_jobs.task_settings;
    v_seconds double precision;
    v_base double precision;
BEGIN
    SELECT * INTO v_policy FROM app_jobs.task_settings AS ts
    WHERE ts.task_identifier = p_task;
    v_base := coalesce(extract(EPOCH FROM v_policy.retry_base), 1);
    IF v_policy.task_identifier IS NULL OR v_policy.retry_kind = 'exponential' AND v_policy.retry_base IS NULL THEN
        v_seconds := exp(least(p_attempts, 10));
    ELSIF v_policy.retry_kind = 'exponential' THEN
        v_seconds := v_base * power(2, least(greatest(p_attempts, 1) - 1, 60));
    ELSIF v_policy.retry_kind = 'linear' THEN
        v_seconds := v_base * greatest(p_attempts, 1);
    ELSIF v_policy.retry_kind = 'fixed' THEN
        v_seconds := v_base;
    ELSE
        v_seconds := coalesce(extract(EPOCH FROM v_policy.retry_delays[
            least(greatest(p_attempts, 1), cardinality(v_policy.retry_delays))
        ]), 0);
    END IF;
    IF v_policy.retry_cap IS NOT NULL THEN
        v_seconds := least(v_seconds, extract(EPOCH FROM v_policy.retry_cap));
    END IF;
    IF v_policy.retry_jitter > 0 THEN
        v_seconds := v_seconds * (1 + v_policy.retry_jitter * (2 * random() - 1));
    END IF;
    -- Seconds, computed in floating point so a long schedule cannot overflow an
    -- interval; anything beyond a century is a century.
    RETURN make_interval(secs => least(v_seconds, 100 * 365.25 * 86400));
END;
$$;
