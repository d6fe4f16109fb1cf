-- Add deltas to a named queue's job and running counts; create the row at first use,
-- drop it at zero jobs, and clear its lock holder once nothing of it runs.
CREATE FUNCTION app_jobs._change_job_queue_count(
    p_queue_name text,
    p_delta integer,
    p_running_delta integer DEFAULT 0
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
        INSERT INTO app_jobs.job_queues AS q (queue_name, job_count, running_count)
        VALUES (p_queue_name, p_delta, p_running_delta)
        ON CONFLICT (queue_name) DO UPDATE SET
            job_count = q.job_count + p_delta,
            running_count = q.running_count + p_running_delta;
        RETURN;
    END IF;
    UPDATE app_jobs.job_queues AS q
    SET
        job_count = q.job_count + p_delta,
        running_count = q.running_count + p_running_delta,
        locked_by = CASE WHEN q.running_count + p_running_delta > 0 THEN q.locked_by END,
        locked_at = CASE WHEN q.running_count + p_running_delta > 0 THEN q.locked_at END
    WHERE q.queue_name = p_queue_name
    RETURNING q.job_count INTO v_count;
    IF v_count <= 0 THEN
        DELETE FROM app_jobs.job_queues AS q
        WHERE q.queue_name = p_queue_name AND q.job_count <= 0;
    END IF;
END;
$$;

-- Count a statement's inserted jobs into their named queues, in queue-name order.
CREATE FUNCTION app_jobs._tg_increase_job_queue_count() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_queue record;
BEGIN
    FOR v_queue IN
        SELECT
            n.queue_name,
            count(*)::integer AS jobs,
            (count(*) FILTER (WHERE n.locked_at IS NOT NULL))::integer AS running
        FROM new_jobs AS n
        WHERE n.queue_name IS NOT NULL
        GROUP BY n.queue_name
        ORDER BY n.queue_name
    LOOP
        PERFORM app_jobs._change_job_queue_count(
            v_queue.queue_name, v_queue.jobs, v_queue.running
        );
    END LOOP;
    RETURN NULL;
END;
$$;

-- Count a statement's deleted jobs out of their named queues, in queue-name order.
CREATE FUNCTION app_jobs._tg_decrease_job_queue_count() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_queue record;
BEGIN
    FOR v_queue IN
        SELECT
            o.queue_name,
            count(*)::integer AS jobs,
            (count(*) FILTER (WHERE o.locked_at IS NOT NULL))::integer AS running
        FROM old_jobs AS o
        WHERE o.queue_name IS NOT NULL
        GROUP BY o.queue_name
        ORDER BY o.queue_name
    LOOP
        PERFORM app_jobs._change_job_queue_count(
            v_queue.queue_name, -v_queue.jobs, -v_queue.running
        );
    END LOOP;
    RETURN NULL;
END;
$$;

-- Move a job's counts between queues, or count it in or out of its queue's running
-- jobs; two queue rows are taken in name order so opposite moves cannot deadlock.
CREATE FUNCTION app_jobs._tg_move_job_queue_count() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_old_running integer := (old.locked_at IS NOT NULL)::integer;
    v_new_running integer := (new.locked_at IS NOT NULL)::integer;
BEGIN
    IF old.queue_name IS NOT DISTINCT FROM new.queue_name THEN
        PERFORM app_jobs._change_job_queue_count(
            new.queue_name, 0, v_new_running - v_old_running
        );
    ELSIF old.queue_name IS NOT NULL
        AND (new.queue_name IS NULL OR old.queue_name < new.queue_name) THEN
        PERFORM app_jobs._change_job_queue_count(old.queue_name, -1, -v_old_running);
        PERFORM app_jobs._change_job_queue_count(new.queue_name, 1, v_new_running);
    ELSE
        PERFORM app_jobs._change_job_queue_count(new.queue_name, 1, v_new_running);
        PERFORM app_jobs._change_job_queue_count(old.queue_name, -1, -v_old_running);
    END IF;
    RETURN NULL;
END;
$$;

-- Statement-level, so a statement touching many queues locks their rows in name order
-- (as every other path does) and two such statements cannot deadlock on job_queues.
CREATE TRIGGER _500_increase_job_queue_count
AFTER INSERT ON app_jobs.jobs
REFERENCING NEW TABLE AS new_jobs
FOR EACH STATEMENT EXECUTE FUNCTION app_jobs._tg_increase_job_queue_count();

CREATE TRIGGER _500_decrease_job_queue_count
AFTER DELETE ON app_jobs.jobs
REFERENCING OLD TABLE AS old_jobs
FOR EACH STATEMENT EXECUTE FUNCTION app_jobs._tg_decrease_job_queue_count();

CREATE TRIGGER _500_move_job_queue_count
AFTER UPDATE OF queue_name, locked_at ON app_jobs.jobs
FOR EACH ROW WHEN (
    new.queue_name IS DISTINCT FROM old.queue_name
    OR new.queue_name IS NOT NULL AND (new.locked_at IS NULL) <> (old.locked_at IS NULL)
)
EXECUTE FUNCTION app_jobs._tg_move_job_queue_count();
