-- Validate a schedule when it is written and compute its first slot.
CREATE FUNCTION app_jobs.tg_scheduled_jobs_next_run() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    new.next_run_at := app_jobs.schedule_next_run(new.schedule_info, now());
    RETURN new;
END;
$$;

CREATE TRIGGER _200_next_run_at
BEFORE INSERT OR UPDATE OF schedule_info ON app_jobs.scheduled_jobs
FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_scheduled_jobs_next_run();
