-- Pause a recurring job: the scheduler tick (and get_scheduled_job) leave it alone until
-- it is resumed; run_scheduled_job still runs it on demand. Pausing a paused schedule
-- keeps its paused_at. PJ009 when there is no such schedule, or it belongs to a tenant
-- the caller may not act on (it looks missing).
CREATE FUNCTION app_jobs.pause_scheduled_job(
    scheduled_job_id bigint
) RETURNS app_jobs.scheduled_jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_row app_jobs.scheduled_jobs;
BEGIN
    -- The tenant check is part of the UPDATE: no row of another tenant is ever touched.
    UPDATE app_jobs.scheduled_jobs AS s
    SET paused_at = coalesce(s.paused_at, now())
    WHERE s.id = pause_scheduled_job.scheduled_job_id
        AND app_jobs._tenant_allowed(s.database_id)
    RETURNING * INTO v_row;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'scheduled job % does not exist', scheduled_job_id
            USING ERRCODE = 'PJ009';
    END IF;
    RETURN v_row;
END;
$$;

COMMENT ON FUNCTION app_jobs.pause_scheduled_job IS
'Pause the scheduled job with this id (the tick skips it until resumed); PJ009 when unknown';

-- Resume a paused recurring job: its next run is the first slot after now(); the slots
-- it missed while paused are not enqueued (not even with backfill). Resuming a schedule
-- that is not paused changes nothing. PJ009 as for pause_scheduled_job.
CREATE FUNCTION app_jobs.resume_scheduled_job(
    scheduled_job_id bigint
) RETURNS app_jobs.scheduled_jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_row app_jobs.scheduled_jobs;
BEGIN
    -- The tenant check is part of the UPDATE, as in pause_scheduled_job.
    UPDATE app_jobs.scheduled_jobs AS s
    SET
        paused_at = NULL,
        next_run_at = CASE
            WHEN s.paused_at IS NULL THEN s.next_run_at
            ELSE app_jobs.schedule_next_run(s.schedule_info, now())
        END
    WHERE s.id = resume_scheduled_job.scheduled_job_id
        AND app_jobs._tenant_allowed(s.database_id)
    RETURNING * INTO v_row;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'scheduled job % does not exist', scheduled_job_id
            USING ERRCODE = 'PJ009';
    END IF;
    RETURN v_row;
END;
$$;

COMMENT ON FUNCTION app_jobs.resume_scheduled_job IS
'Resume a paused scheduled job from the first slot after now() (missed slots are not '
'enqueued); PJ009 when unknown';
