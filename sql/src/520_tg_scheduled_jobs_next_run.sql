-- Validate a schedule when it is written and compute its first slot: PJ008 for more
-- than 16 kB of schedule_info (or anything schedule_spec refuses), PJ010 for a time zone
-- that is not an IANA name (PostgreSQL would also take POSIX rules such as "5" or
-- "UTC+3", surely mistakes here), PJ042 when it would never fire (an impossible date such
-- as 0 0 31 2 *, or an end already past).
CREATE FUNCTION app_jobs._tg_scheduled_jobs_next_run() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- Rewriting the same schedule keeps its pending slot.
    IF tg_op = 'UPDATE' AND old.schedule_info::text = new.schedule_info::text THEN
        RETURN new;
    END IF;
    IF octet_length(new.schedule_info::text) > 16384 THEN
        RAISE EXCEPTION 'schedule_info is % bytes, more than 16384',
            octet_length(new.schedule_info::text)
            USING ERRCODE = 'PJ008';
    END IF;
    IF json_typeof(new.schedule_info) = 'object'
        AND new.schedule_info ->> 'tz' IS NOT NULL
        AND NOT EXISTS (
            SELECT 1 FROM pg_catalog.pg_timezone_names AS z
            WHERE lower(z.name) = lower(new.schedule_info ->> 'tz')
        ) THEN
        RAISE EXCEPTION 'unknown time zone %', to_json(new.schedule_info ->> 'tz')
            USING ERRCODE = 'PJ010',
            HINT = 'tz takes an IANA time zone name such as UTC or Europe/Berlin.';
    END IF;
    new.next_run_at := app_jobs.schedule_next_run(new.schedule_info, now());
    IF new.next_run_at IS NULL THEN
        RAISE EXCEPTION 'schedule % never fires', new.schedule_info::text
            USING ERRCODE = 'PJ042',
            HINT = 'Its fields name no date that exists (such as February 31), or its end '
            || 'has passed.';
    END IF;
    RETURN new;
END;
$$;

CREATE TRIGGER _200_next_run_at
BEFORE INSERT OR UPDATE OF schedule_info ON app_jobs.scheduled_jobs
FOR EACH ROW EXECUTE FUNCTION app_jobs._tg_scheduled_jobs_next_run();
