-- Make the day partitions of job_history (UTC days, job_history_pYYYYMMDD) for today and
-- the next p_days_ahead days, and for each day within history_retention that has rows in
-- job_history_default (moved into their new partition); returns how many it made.
CREATE FUNCTION app_jobs._ensure_history_partitions(
    p_days_ahead integer DEFAULT 3
) RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_today date := (now() AT TIME ZONE 'UTC')::date;
    v_cutoff timestamptz := now() - app_jobs.setting('history_retention')::interval;
    v_day date;
    v_name text;
    v_from timestamptz;
    v_to timestamptz;
    v_made integer := 0;
    v_days date[];
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    -- One maker at a time: workers run this side by side.
    PERFORM pg_catalog.pg_advisory_xact_lock(
        pg_catalog.hashtext('app_jobs._ensure_history_partitions')
    );
    v_days := ARRAY(
        SELECT x.day FROM (
            SELECT v_today + d AS day FROM generate_series(0, p_days_ahead) AS d
            UNION
            SELECT DISTINCT (h.finished_at AT TIME ZONE 'UTC')::date
            FROM app_jobs.job_history_default AS h
            WHERE h.finished_at >= v_cutoff
        ) AS x
        WHERE to_regclass(format('app_jobs.%I', 'job_history_p' || to_char(x.day, 'YYYYMMDD')))
            IS NULL
        ORDER BY 1
    );
    IF cardinality(v_days) = 0 THEN
        RETURN 0;
    END IF;
    -- Readers lock job_history, then its partitions; making a partition locks the parent
    -- and the default partition exclusively. Take the parent first (LOCK TABLE takes its
    -- partitions after it), or a reader and this deadlock. Wait a second at most: rows
    -- land in the default partition meanwhile, and the next purge makes the days.
    BEGIN
        PERFORM set_config('lock_timeout', '1s', TRUE);
        LOCK TABLE app_jobs.job_history IN ACCESS EXCLUSIVE MODE;
    EXCEPTION WHEN lock_not_available THEN
        RAISE WARNING 'job_history partitions not made (job_history is busy), next time';
        RETURN 0;
    END;
    PERFORM set_config('lock_timeout', v_lock_timeout, TRUE);
    FOREACH v_day IN ARRAY v_days LOOP
        v_name := 'job_history_p' || to_char(v_day, 'YYYYMMDD');
        v_from := v_day::timestamp AT TIME ZONE 'UTC';
        v_to := (v_day + 1)::timestamp AT TIME ZONE 'UTC';
        IF EXISTS (
            SELECT 1 FROM app_jobs.job_history_default AS h
            WHERE h.finished_at >= v_from AND h.finished_at < v_to
        ) THEN
            -- The default partition may not keep rows a new partition covers: fill the
            -- day's table from it, then attach.
            EXECUTE format(
                'CREATE TABLE app_jobs.%I (LIKE app_jobs.job_history INCLUDING DEFAULTS '
                || 'INCLUDING CONSTRAINTS)',
                v_name
            );
            EXECUTE format(
                'WITH moved AS (DELETE FROM app_jobs.job_history_default AS h '
                || 'WHERE h.finished_at >= $1 AND h.finished_at < $2 RETURNING h.*) '
                || 'INSERT INTO app_jobs.%I SELECT * FROM moved',
                v_name
            ) USING v_from, v_to;
            EXECUTE format(
                'ALTER TABLE app_jobs.job_history ATTACH PARTITION app_jobs.%I '
                || 'FOR VALUES FROM (%L) TO (%L)',
                v_name, v_from, v_to
            );
        ELSE
            EXECUTE format(
                'CREATE TABLE app_jobs.%I PARTITION OF app_jobs.job_history '
                || 'FOR VALUES FROM (%L) TO (%L)',
                v_name, v_from, v_to
            );
        END IF;
        -- Read access as for every table (950_security.sql); no RLS on a partition: the
        -- enqueue roles, whom the parent's policies filter, get no grant on it.
        EXECUTE format('GRANT SELECT ON app_jobs.%I TO pgjobs_worker, pgjobs_admin', v_name);
        v_made := v_made + 1;
    END LOOP;
    RETURN v_made;
END;
$$;

COMMENT ON FUNCTION app_jobs._ensure_history_partitions IS
'Make job_history''s day partitions ahead (and for days kept in its default partition)';

-- Drop history older than the history_retention setting; returns how many rows went.
-- Whole day partitions older than the cutoff are dropped; only the day that straddles
-- it (and the default partition) are deleted from. Makes the partitions ahead first.
CREATE FUNCTION app_jobs.purge_job_history() RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_cutoff timestamptz := now() - app_jobs.setting('history_retention')::interval;
    v_lock_timeout text := current_setting('lock_timeout');
    v_part text;
    v_rows bigint;
    v_count bigint := 0;
BEGIN
    PERFORM app_jobs._ensure_history_partitions();
    -- Rows deleted one by one: those of the day that straddles the cutoff (partition
    -- pruning leaves only its partition and the default one) and older ones in the
    -- default partition. Before any drop, which locks job_history until commit.
    DELETE FROM app_jobs.job_history AS h
    WHERE h.finished_at < v_cutoff
        AND h.finished_at >= date_trunc('day', v_cutoff AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_count := v_rows;
    DELETE FROM app_jobs.job_history_default AS h WHERE h.finished_at < v_cutoff;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_count := v_count + v_rows;
    FOR v_part IN
        SELECT c.relname
        FROM pg_catalog.pg_inherits AS i
        INNER JOIN pg_catalog.pg_class AS c ON i.inhrelid = c.oid
        WHERE i.inhparent = 'app_jobs.job_history'::regclass
            AND c.relname ~ '^job_history_p[0-9]{8}$'
            AND (to_date(substr(c.relname, 14), 'YYYYMMDD') + 1)::timestamp
            AT TIME ZONE 'UTC' <= v_cutoff
        ORDER BY c.relname
    LOOP
        -- Dropping a partition locks job_history for a moment: wait for readers at most
        -- a second (a long dashboard query would otherwise hold up every completion
        -- queued behind the drop); a day not dropped now is dropped next time.
        BEGIN
            PERFORM set_config('lock_timeout', '1s', TRUE);
            LOCK TABLE app_jobs.job_history IN ACCESS EXCLUSIVE MODE;
            EXECUTE format('SELECT count(*) FROM app_jobs.%I', v_part) INTO v_rows;
            EXECUTE format('DROP TABLE app_jobs.%I', v_part);
            v_count := v_count + v_rows;
        EXCEPTION WHEN lock_not_available THEN
            RAISE WARNING 'purge_job_history: % not dropped (job_history is busy), next time',
                v_part;
        END;
        PERFORM set_config('lock_timeout', v_lock_timeout, TRUE);
    END LOOP;
    RETURN least(v_count, 2147483647)::integer;
END;
$$;

COMMENT ON FUNCTION app_jobs.purge_job_history IS
'Drop job_history day partitions (and delete rows) older than history_retention; makes '
'the partitions ahead (workers call this periodically)';
