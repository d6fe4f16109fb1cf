-- How long a task's job waits after failed attempt number p_attempts: the task's retry
-- policy (task_settings), else the seed's exp(least(attempts, 10)) seconds.
CREATE FUNCTION app_jobs.retry_delay(p_task text, p_attempts integer) RETURNS interval
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_policy app_jobs.task_settings;
    v_delay interval;
BEGIN
    SELECT * INTO v_policy FROM app_jobs.task_settings AS ts
    WHERE ts.task_identifier = p_task;
    IF NOT FOUND OR v_policy.retry_kind = 'exponential' AND v_policy.retry_base IS NULL THEN
        v_delay := exp(least(p_attempts, 10)) * interval '1 second';
    ELSIF v_policy.retry_kind = 'exponential' THEN
        v_delay := v_policy.retry_base * power(2, least(greatest(p_attempts, 1) - 1, 30));
    ELSIF v_policy.retry_kind = 'linear' THEN
        v_delay := coalesce(v_policy.retry_base, interval '1 second') * greatest(p_attempts, 1);
    ELSIF v_policy.retry_kind = 'fixed' THEN
        v_delay := coalesce(v_policy.retry_base, interval '1 second');
    ELSE
        v_delay := coalesce(
            v_policy.retry_delays[least(greatest(p_attempts, 1), cardinality(v_policy.retry_delays))],
            interval '0'
        );
    END IF;
    IF v_policy.retry_cap IS NOT NULL THEN
        v_delay := least(v_delay, v_policy.retry_cap);
    END IF;
    IF v_policy.retry_jitter > 0 THEN
        v_delay := v_delay * (1 + v_policy.retry_jitter * (2 * random() - 1));
    END IF;
    RETURN v_delay;
END;
$$;
