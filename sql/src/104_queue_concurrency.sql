-- How many jobs of a named queue may run at once (queue_settings, else 1).
CREATE FUNCTION app_jobs._queue_concurrency(p_queue_name text) RETURNS integer
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN coalesce(
        (SELECT qs.max_concurrency FROM app_jobs.queue_settings AS qs
            WHERE qs.queue_name = p_queue_name),
        1
    );
END;
$$;
