-- Enqueue one job now from a recurring job's definition, with the schedule's key (an
-- upsert, as add_job does). Refused with PJ041 (message ALREADY_SCHEDULED, as the
-- original app_jobs.run_scheduled_job) while the job it enqueued last is still waiting
-- (or waiting to retry), or has been running for less than job_expiry.
CREATE FUNCTION app_jobs.run_scheduled_job(
    scheduled_job_id bigint,
    job_expiry interval DEFAULT '1 hour'
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_schedule app_jobs.scheduled_jobs;
    v_job app_jobs.jobs;
BEGIN
    PERFORM app_jobs._check_job_expiry(job_expiry);
    SELECT * INTO v_schedule
    FROM app_jobs.scheduled_jobs AS s
    WHERE s.id = scheduled_job_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'scheduled job % does not exist', scheduled_job_id
            USING ERRCODE = 'PJ009';
    END IF;
    -- (The schedule's row is locked: two callers cannot both pass this check.)
    SELECT * INTO v_job FROM app_jobs.jobs AS j
    WHERE j.id = v_schedule.last_scheduled_id
        AND (
            j.locked_at IS NULL AND j.attempts < j.max_attempts
            OR j.locked_at >= now() - coalesce(job_expiry, interval '1 hour')
        );
    IF FOUND THEN
        RAISE EXCEPTION 'ALREADY_SCHEDULED'
            USING ERRCODE = 'PJ041',
            DETAIL = format(
                'Job %s, enqueued last by scheduled job %s, is still %s.', v_job.id,
                scheduled_job_id,
                CASE WHEN v_job.locked_at IS NULL THEN 'waiting' ELSE 'running' END
            );
    END IF;

    v_job := app_jobs.add_job(
        db_id := v_schedule.database_id,
        identifier := v_schedule.task_identifier,
        payload := v_schedule.payload,
        job_key := v_schedule.key,
        queue_name := v_schedule.queue_name,
        max_attempts := v_schedule.max_attempts,
        priority := v_schedule.priority
    );

    UPDATE app_jobs.scheduled_jobs AS s
    SET last_scheduled = now(), last_scheduled_id = coalesce(v_job.id, s.last_scheduled_id)
    WHERE s.id = scheduled_job_id;
    RETURN v_job;
END;
$$;

COMMENT ON FUNCTION app_jobs.run_scheduled_job IS
'Enqueue a job now from the scheduled job with this id (with its key); PJ041 '
'ALREADY_SCHEDULED while the job it enqueued last still waits or runs within job_expiry';
