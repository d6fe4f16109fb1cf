-- Count a job into its named queue, creating the queue row on first use.
CREATE FUNCTION app_jobs.tg_increase_job_queue_count() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO app_jobs.job_queues AS q (queue_name, job_count)
    VALUES (new.queue_name, 1)
    ON CONFLICT (queue_name) DO UPDATE SET job_count = q.job_count + 1;
    RETURN NULL;
END;
$$;

-- Count a job out of its named queue, removing the queue row at zero.
CREATE FUNCTION app_jobs.tg_decrease_job_queue_count() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE app_jobs.job_queues AS q
    SET job_count = q.job_count - 1
    WHERE q.queue_name = OLD.queue_name
    RETURNING q.job_count INTO v_count;

    IF v_count <= 0 THEN
        DELETE FROM app_jobs.job_queues AS q
        WHERE q.queue_name = OLD.queue_name AND q.job_count <= 0;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER _500_increase_job_queue_count
AFTER INSERT ON app_jobs.jobs
FOR EACH ROW WHEN (new.queue_name IS NOT NULL)
EXECUTE FUNCTION app_jobs.tg_increase_job_queue_count();

CREATE TRIGGER _500_increase_job_queue_count_on_update
AFTER UPDATE OF queue_name ON app_jobs.jobs
FOR EACH ROW WHEN (
    new.queue_name IS DISTINCT FROM old.queue_name
    AND new.queue_name IS NOT NULL
)
EXECUTE FUNCTION app_jobs.tg_increase_job_queue_count();

CREATE TRIGGER _500_decrease_job_queue_count
AFTER DELETE ON app_jobs.jobs
FOR EACH ROW WHEN (old.queue_name IS NOT NULL)
EXECUTE FUNCTION app_jobs.tg_decrease_job_queue_count();

CREATE TRIGGER _500_decrease_job_queue_count_on_update
AFTER UPDATE OF queue_name ON app_jobs.jobs
FOR EACH ROW WHEN (
    new.queue_name IS DISTINCT FROM old.queue_name
    AND old.queue_name IS NOT NULL
)
EXECUTE FUNCTION app_jobs.tg_decrease_job_queue_count();
