-- Add delta to a named queue's job count; create the row at first use, drop it at zero.
CREATE FUNCTION app_jobs.change_job_queue_count(
    p_queue_name text,
    p_delta integer
) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_count integer;
BEGIN
    IF p_queue_name IS NULL THEN
        RETURN;
    END IF;
    IF p_delta > 0 THEN
        INSERT INTO app_jobs.job_queues AS q (queue_name, job_count)
        VALUES (p_queue_name, p_delta)
        ON CONFLICT (queue_name) DO UPDATE SET job_count = q.job_count + p_delta;
        RETURN;
    END IF;
    UPDATE app_jobs.job_queues AS q
    SET job_count = q.job_count + p_delta
    WHERE q.queue_name = p_queue_name
    RETURNING q.job_count INTO v_count;
    IF v_count <= 0 THEN
        DELETE FROM app_jobs.job_queues AS q
        WHERE q.queue_name = p_queue_name AND q.job_count <= 0;
    END IF;
END;
$$;

-- Count a statement's inserted jobs into their named queues, in queue-name order.
CREATE FUNCTION app_jobs.tg_increase_job_queue_count() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_queue record;
BEGIN
    FOR v_queue IN
        SELECT n.queue_name, count(*)::integer AS jobs
        FROM new_jobs AS n
        WHERE n.queue_name IS NOT NULL
        GROUP BY n.queue_name
        ORDER BY n.queue_name
    LOOP
        PERFORM app_jobs.change_job_queue_count(v_queue.queue_name, v_queue.jobs);
    END LOOP;
    RETURN NULL;
END;
$$;

-- Count a statement's deleted jobs out of their named queues, in queue-name order.
CREATE FUNCTION app_jobs.tg_decrease_job_queue_count() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_queue record;
BEGIN
    FOR v_queue IN
        SELECT o.queue_name, count(*)::integer AS jobs
        FROM old_jobs AS o
        WHERE o.queue_name IS NOT NULL
        GROUP BY o.queue_name
        ORDER BY o.queue_name
    LOOP
        PERFORM app_jobs.change_job_queue_count(v_queue.queue_name, -v_queue.jobs);
    END LOOP;
    RETURN NULL;
END;
$$;

-- Move a job's count between queues, taking both queue rows in name order so
-- two jobs moving in opposite directions cannot deadlock.
CREATE FUNCTION app_jobs.tg_move_job_queue_count() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF old.queue_name IS NOT NULL
        AND (new.queue_name IS NULL OR old.queue_name < new.queue_name) THEN
        PERFORM app_jobs.change_job_queue_count(old.queue_name, -1);
        PERFORM app_jobs.change_job_queue_count(new.queue_name, 1);
    ELSE
        PERFORM app_jobs.change_job_queue_count(new.queue_name, 1);
        PERFORM app_jobs.change_job_queue_count(old.queue_name, -1);
    END IF;
    RETURN NULL;
END;
$$;

-- Statement-level, so a statement touching many queues locks their rows in name order
-- (as every other path does) and two such statements cannot deadlock on job_queues.
CREATE TRIGGER _500_increase_job_queue_count
AFTER INSERT ON app_jobs.jobs
REFERENCING NEW TABLE AS new_jobs
FOR EACH STATEMENT EXECUTE FUNCTION app_jobs.tg_increase_job_queue_count();

CREATE TRIGGER _500_decrease_job_queue_count
AFTER DELETE ON app_jobs.jobs
REFERENCING OLD TABLE AS old_jobs
FOR EACH STATEMENT EXECUTE FUNCTION app_jobs.tg_decrease_job_queue_count();

CREATE TRIGGER _500_move_job_queue_count
AFTER UPDATE OF queue_name ON app_jobs.jobs
FOR EACH ROW WHEN (new.queue_name IS DISTINCT FROM old.queue_name)
EXECUTE FUNCTION app_jobs.tg_move_job_queue_count();
