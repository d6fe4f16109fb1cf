-- Enqueue one job now from a recurring job's definition.
CREATE FUNCTION app_jobs.run_scheduled_job(scheduled_job_id bigint) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_schedule app_jobs.scheduled_jobs;
    v_job app_jobs.jobs;
BEGIN
    SELECT * INTO v_schedule
    FROM app_jobs.scheduled_jobs AS s
    WHERE s.id = scheduled_job_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'scheduled job % does not exist', scheduled_job_id
            USING ERRCODE = 'PJ009';
    END IF;

    v_job := app_jobs.add_job(
        db_id := v_schedule.database_id,
        identifier := v_schedule.task_identifier,
        payload := v_schedule.payload,
        queue_name := v_schedule.queue_name,
        max_attempts := v_schedule.max_attempts,
        priority := v_schedule.priority
    );

    UPDATE app_jobs.scheduled_jobs AS s
    SET last_scheduled = now(), last_scheduled_id = v_job.id
    WHERE s.id = scheduled_job_id;
    RETURN v_job;
END;
$$;

COMMENT ON FUNCTION app_jobs.run_scheduled_job IS
'Enqueue a job now from the scheduled job with this id';
