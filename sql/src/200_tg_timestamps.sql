-- Keep created_at fixed and updated_at current on every row update.
CREATE FUNCTION app_jobs._tg_timestamps() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.created_at := OLD.created_at;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- On jobs the hot statements (claims, finishes) set updated_at themselves; the trigger
-- (a PL/pgSQL call per row) runs only for an update that does not, or that touches
-- created_at.
CREATE TRIGGER _100_timestamps
BEFORE UPDATE ON app_jobs.jobs
FOR EACH ROW WHEN (
    new.updated_at IS NOT DISTINCT FROM old.updated_at
    OR new.created_at IS DISTINCT FROM old.created_at
)
EXECUTE FUNCTION app_jobs._tg_timestamps();

CREATE TRIGGER _100_timestamps
BEFORE UPDATE ON app_jobs.scheduled_jobs
FOR EACH ROW EXECUTE FUNCTION app_jobs._tg_timestamps();
