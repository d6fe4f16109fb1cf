-- Wake listening workers once per statement that adds jobs.
CREATE FUNCTION app_jobs._tg_notify_worker() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM app_jobs._notify('jobs:insert', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER _900_notify_worker
AFTER INSERT ON app_jobs.jobs
FOR EACH STATEMENT EXECUTE FUNCTION app_jobs._tg_notify_worker();
