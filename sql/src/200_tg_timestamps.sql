-- Keep created_at fixed and updated_at current on every row update.
CREATE FUNCTION app_jobs.tg_timestamps() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.created_at := OLD.created_at;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER _100_timestamps
BEFORE UPDATE ON app_jobs.jobs
FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_timestamps();

CREATE TRIGGER _100_timestamps
BEFORE UPDATE ON app_jobs.scheduled_jobs
FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_timestamps();
