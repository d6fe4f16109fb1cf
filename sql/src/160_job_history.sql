-- Drop history older than the history_retention setting; returns how many rows went.
CREATE FUNCTION app_jobs.purge_job_history() RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM app_jobs.job_history AS h
    WHERE h.finished_at < now() - app_jobs.setting('history_retention')::interval;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

COMMENT ON FUNCTION app_jobs.purge_job_history IS
'Delete job_history rows older than history_retention (workers call this periodically)';
