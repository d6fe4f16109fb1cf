-- Raise a distinct SQLSTATE for each invalid field of a job or schedule.
CREATE FUNCTION app_jobs.check_job_spec(
    p_identifier text,
    p_queue_name text,
    p_job_key text,
    p_max_attempts integer
) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_identifier IS NULL OR length(p_identifier) NOT BETWEEN 1 AND 126 THEN
        RAISE EXCEPTION 'task identifier must be 1 to 126 characters, got %',
            coalesce(length(p_identifier)::text || ' characters', 'NULL')
            USING ERRCODE = 'PJ001';
    END IF;
    IF p_queue_name IS NOT NULL AND length(p_queue_name) NOT BETWEEN 1 AND 126 THEN
        RAISE EXCEPTION 'queue name must be 1 to 126 characters, got %',
            length(p_queue_name)
            USING ERRCODE = 'PJ002';
    END IF;
    IF p_job_key IS NOT NULL AND length(p_job_key) NOT BETWEEN 1 AND 512 THEN
        RAISE EXCEPTION 'job key must be 1 to 512 characters, got %',
            length(p_job_key)
            USING ERRCODE = 'PJ003';
    END IF;
    IF p_max_attempts IS NOT NULL AND p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, got %', p_max_attempts
            USING ERRCODE = 'PJ004';
    END IF;
END;
$$;
