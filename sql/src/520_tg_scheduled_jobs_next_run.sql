-- Validate a schedule when it is written and compute its first slot.
CREATE FUNCTION app_jobs.tg_scheduled_jobs_next_run() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- Rewriting the same schedule keeps its pending slot.
    IF tg_op = 'UPDATE' AND old.schedule_info::text = new.schedule_info::text THEN
        RETURN new;
    END IF;
    new.next_run_at := app_jobs.schedule_next_run(new.schedule_info, now());
    RETURN new;
END;
$$;

CREATE TRIGGER _200_next_run_at
BEFORE INSERT OR UPDATE OF schedule_info ON app_jobs.scheduled_jobs
FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_scheduled_jobs_next_run();
