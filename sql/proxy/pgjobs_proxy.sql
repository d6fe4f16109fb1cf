-- pgjobs proxy: PL/Proxy functions that route the enqueue API to shard clusters.
--
-- This runs in a database of its own (the proxy), never in a database where pgjobs is
-- installed. Every shard runs pgjobs unchanged; the proxy holds no jobs, only functions
-- with the names and parameters of the shards' API that forward each call to the shard
-- of its tenant: hashtext(db_id::text) & (shards - 1), a NULL db_id to the first shard
-- (partition p0). The cluster is the SQL/MED server pgjobs_shards (partitions p0, p1,
-- ...), which `pgjobs shard` creates before it runs this file (see doc/sharding.md).
-- Requires: CREATE EXTENSION plproxy. Safe to run again (it replaces the functions and
-- keeps app_jobs.tenant_shards).

CREATE SCHEMA IF NOT EXISTS app_jobs;

-- Tenants pinned to a shard (moved away from the shard their hash names), by partition
-- number: 0 for the first shard given to `pgjobs shard`, 1 for the second, ...
CREATE TABLE IF NOT EXISTS app_jobs.tenant_shards (
    db_id uuid PRIMARY KEY,
    shard integer NOT NULL CHECK (shard >= 0),
    pinned_at timestamptz NOT NULL DEFAULT now()
);

-- The row types the shards return, as in pgjobs 0.10.0 (a shard of another version may
-- return other columns: PL/Proxy reads the ones named here, by name).
DO $$
BEGIN
    IF to_regtype('app_jobs.jobs') IS NULL THEN
        CREATE TYPE app_jobs.jobs AS (
            id bigint,
            database_id uuid,
            queue_name text,
            task_identifier text,
            payload json,
            priority integer,
            run_at timestamptz,
            attempts integer,
            max_attempts integer,
            key text,
            last_error text,
            locked_at timestamptz,
            locked_by text,
            created_at timestamptz,
            updated_at timestamptz,
            progress integer,
            stage text,
            cancel_requested_at timestamptz,
            timeout interval,
            origin text,
            bundle_id bigint,
            blocked_by integer,
            is_available boolean
        );
    END IF;
    IF to_regtype('app_jobs.scheduled_jobs') IS NULL THEN
        CREATE TYPE app_jobs.scheduled_jobs AS (
            id bigint,
            database_id uuid,
            queue_name text,
            task_identifier text,
            payload json,
            priority integer,
            max_attempts integer,
            key text,
            locked_at timestamptz,
            locked_by text,
            schedule_info json,
            last_scheduled timestamptz,
            last_scheduled_id bigint,
            created_at timestamptz,
            updated_at timestamptz,
            next_run_at timestamptz,
            last_error text,
            last_error_at timestamptz,
            paused_at timestamptz
        );
    END IF;
    IF to_regtype('app_jobs.job_status') IS NULL THEN
        CREATE TYPE app_jobs.job_status AS (
            id bigint,
            task_identifier text,
            queue_name text,
            key text,
            status text,
            attempts integer,
            max_attempts integer,
            priority integer,
            run_at timestamptz,
            progress integer,
            stage text,
            cancel_requested boolean,
            last_error text,
            result jsonb,
            worker_id text,
            created_at timestamptz,
            started_at timestamptz,
            finished_at timestamptz,
            origin text,
            bundle_id bigint
        );
    END IF;
    IF to_regtype('app_jobs.queue_stats_row') IS NULL THEN
        CREATE TYPE app_jobs.queue_stats_row AS (
            task_identifier text,
            queue_name text,
            waiting bigint,
            scheduled bigint,
            running bigint,
            retrying bigint,
            failed bigint,
            blocked bigint,
            oldest_waiting interval,
            completed_last_5m bigint,
            failed_last_5m bigint,
            cancelled_last_5m bigint,
            completed_per_minute numeric,
            failed_per_minute numeric
        );
    END IF;
END;
$$;

-- How many shards (partitions) the pgjobs_shards server has.
CREATE OR REPLACE FUNCTION app_jobs.shard_count() RETURNS integer
LANGUAGE sql STABLE
AS $$
    SELECT count(*)::integer
    FROM pg_catalog.pg_foreign_server AS s,
        unnest(s.srvoptions) AS o (opt)
    WHERE s.srvname = 'pgjobs_shards' AND o.opt ~ '^p[0-9]+='
$$;

-- The routing value of a tenant, as RUN ON takes it (PL/Proxy keeps its low bits): the
-- pinned shard of a moved tenant, else hashtext(db_id::text); NULL db_id: 0, the
-- first shard.
CREATE OR REPLACE FUNCTION app_jobs.shard_hash(p_db_id uuid) RETURNS integer
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(
        (SELECT t.shard FROM app_jobs.tenant_shards AS t WHERE t.db_id = p_db_id),
        hashtext(p_db_id::text),
        0
    )
$$;

-- The shard (0-based partition number) a tenant's calls go to.
CREATE OR REPLACE FUNCTION app_jobs.shard_of(p_db_id uuid) RETURNS integer
LANGUAGE sql STABLE
AS $$
    SELECT app_jobs.shard_hash(p_db_id) & (app_jobs.shard_count() - 1)
$$;

-- Enqueue a job on the shard of its tenant (the shard's add_job, same parameters).
CREATE OR REPLACE FUNCTION app_jobs.add_job(
    db_id uuid DEFAULT nullif(
        current_setting('jwt.claims.database_id', TRUE), ''
    )::uuid,
    identifier text DEFAULT NULL,
    payload json DEFAULT '{}'::json,
    job_key text DEFAULT NULL,
    queue_name text DEFAULT NULL,
    run_at timestamptz DEFAULT now(),
    max_attempts integer DEFAULT NULL,
    priority integer DEFAULT 0,
    timeout interval DEFAULT NULL,
    job_key_mode text DEFAULT 'replace',
    origin text DEFAULT NULL,
    depends_on bigint[] DEFAULT NULL
) RETURNS app_jobs.jobs
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjobs_shards';
    RUN ON app_jobs.shard_hash(db_id);
$$;

-- The shard's add_jobs, run on one shard (partition number p_shard): add_jobs' helper.
CREATE OR REPLACE FUNCTION app_jobs._add_jobs_on(
    p_shard integer,
    identifiers text[],
    payloads json[],
    db_ids uuid[],
    queue_names text[],
    run_ats timestamptz[],
    max_attempts integer[],
    priorities integer[],
    job_keys text[],
    timeouts interval[],
    origins text[],
    job_key_mode text
) RETURNS SETOF app_jobs.jobs
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjobs_shards';
    RUN ON p_shard;
    SELECT * FROM app_jobs.add_jobs(
        identifiers, payloads, db_ids, queue_names, run_ats, max_attempts, priorities,
        job_keys, timeouts, origins, job_key_mode
    );
$$;

-- Enqueue many jobs (the shard's add_jobs, same parameters): the jobs of each shard's
-- tenants go to that shard in one call, one call per shard after the other; rows come
-- back in the order of the arrays. Atomic per shard only: when a later shard refuses
-- its jobs, the earlier shards' jobs stay enqueued.
CREATE OR REPLACE FUNCTION app_jobs.add_jobs(
    identifiers text[],
    payloads json[] DEFAULT NULL,
    db_ids uuid[] DEFAULT NULL,
    queue_names text[] DEFAULT NULL,
    run_ats timestamptz[] DEFAULT NULL,
    max_attempts integer[] DEFAULT NULL,
    priorities integer[] DEFAULT NULL,
    job_keys text[] DEFAULT NULL,
    timeouts interval[] DEFAULT NULL,
    origins text[] DEFAULT NULL,
    job_key_mode text DEFAULT 'replace'
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_n integer := coalesce(cardinality(identifiers), 0);
    v_claim uuid := nullif(current_setting('jwt.claims.database_id', TRUE), '')::uuid;
    v_ids uuid[];
    v_parts integer[];
    v_part integer;
    v_pos bigint[] := '{}';
    v_jobs app_jobs.jobs[] := '{}';
BEGIN
    IF EXISTS (
        SELECT 1
        FROM unnest(ARRAY[
            cardinality(payloads), cardinality(db_ids), cardinality(queue_names),
            cardinality(run_ats), cardinality(max_attempts), cardinality(priorities),
            cardinality(job_keys), cardinality(timeouts), cardinality(origins)
        ]) AS c (n)
        WHERE c.n <> v_n
    ) THEN
        RAISE EXCEPTION 'add_jobs arrays must each have % elements, one per identifier', v_n
            USING ERRCODE = 'PJ043',
            HINT = 'Pass NULL for a field that takes its default for every job.';
    END IF;
    -- The caller's claim is read here: the shard's session does not have it.
    v_ids := coalesce(db_ids, array_fill(v_claim, ARRAY[v_n]));
    v_parts := ARRAY(
        SELECT DISTINCT app_jobs.shard_of(d.db_id)
        FROM unnest(v_ids) AS d (db_id)
    );
    -- One shard (the usual call: one tenant): the arrays as they are.
    IF cardinality(v_parts) <= 1 THEN
        RETURN QUERY
        SELECT * FROM app_jobs._add_jobs_on(
            coalesce(v_parts[1], 0), identifiers, payloads, v_ids, queue_names, run_ats,
            max_attempts, priorities, job_keys, timeouts, origins, job_key_mode
        );
        RETURN;
    END IF;
    -- Several: each shard gets its jobs' elements, in order, and the rows it returns go
    -- back to their places.
    FOREACH v_part IN ARRAY v_parts LOOP
        WITH mine AS (
            SELECT
                r.*,
                app_jobs.shard_of(r.db_id) AS part
            FROM unnest(
                identifiers, payloads, v_ids, queue_names, run_ats, max_attempts,
                priorities, job_keys, timeouts, origins
            ) WITH ORDINALITY AS r (
                identifier, payload, db_id, queue_name, run_at, max_attempt, priority,
                job_key, timeout, origin, n
            )
        ),

        sub AS (
            SELECT
                array_agg(m.n ORDER BY m.n) AS pos,
                array_agg(m.identifier ORDER BY m.n) AS sub_identifiers,
                array_agg(m.payload ORDER BY m.n) AS sub_payloads,
                array_agg(m.db_id ORDER BY m.n) AS sub_db_ids,
                array_agg(m.queue_name ORDER BY m.n) AS sub_queue_names,
                array_agg(m.run_at ORDER BY m.n) AS sub_run_ats,
                array_agg(m.max_attempt ORDER BY m.n) AS sub_max_attempts,
                array_agg(m.priority ORDER BY m.n) AS sub_priorities,
                array_agg(m.job_key ORDER BY m.n) AS sub_job_keys,
                array_agg(m.timeout ORDER BY m.n) AS sub_timeouts,
                array_agg(m.origin ORDER BY m.n) AS sub_origins
            FROM mine AS m
            WHERE m.part = v_part
        )

        SELECT
            v_pos || s.pos,
            v_jobs || ARRAY(
                SELECT j FROM app_jobs._add_jobs_on(
                    v_part, s.sub_identifiers,
                    CASE WHEN add_jobs.payloads IS NOT NULL THEN s.sub_payloads END, s.sub_db_ids,
                    CASE WHEN add_jobs.queue_names IS NOT NULL THEN s.sub_queue_names END,
                    CASE WHEN add_jobs.run_ats IS NOT NULL THEN s.sub_run_ats END,
                    CASE WHEN add_jobs.max_attempts IS NOT NULL THEN s.sub_max_attempts END,
                    CASE WHEN add_jobs.priorities IS NOT NULL THEN s.sub_priorities END,
                    CASE WHEN add_jobs.job_keys IS NOT NULL THEN s.sub_job_keys END,
                    CASE WHEN add_jobs.timeouts IS NOT NULL THEN s.sub_timeouts END,
                    CASE WHEN add_jobs.origins IS NOT NULL THEN s.sub_origins END,
                    job_key_mode
                ) AS j
            )
        INTO v_pos, v_jobs
        FROM sub AS s;
    END LOOP;
    -- (Two set-returning functions in a select list step in lockstep, and there a row
    -- stays one value: unnest in FROM would spread it into columns.)
    RETURN QUERY
    SELECT (x.j).*
    FROM (SELECT unnest(v_jobs) AS j, unnest(v_pos) AS n) AS x
    ORDER BY x.n;
END;
$$;

-- Create or update a recurring job on the shard of its tenant (the shard's
-- add_scheduled_job, same parameters).
CREATE OR REPLACE FUNCTION app_jobs.add_scheduled_job(
    db_id uuid DEFAULT nullif(
        current_setting('jwt.claims.database_id', TRUE), ''
    )::uuid,
    identifier text DEFAULT NULL,
    payload json DEFAULT '{}'::json,
    schedule_info json DEFAULT NULL,
    job_key text DEFAULT NULL,
    queue_name text DEFAULT NULL,
    max_attempts integer DEFAULT 25,
    priority integer DEFAULT 0
) RETURNS app_jobs.scheduled_jobs
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjobs_shards';
    RUN ON app_jobs.shard_hash(db_id);
$$;

-- Cancel a job of tenant db_id (job ids are per shard: the tenant names the shard); NULL
-- when that shard has no such job of that tenant, else what the shard's cancel_job says.
CREATE OR REPLACE FUNCTION app_jobs.cancel_job(
    job_id bigint,
    db_id uuid DEFAULT nullif(
        current_setting('jwt.claims.database_id', TRUE), ''
    )::uuid
) RETURNS text
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjobs_shards';
    RUN ON app_jobs.shard_hash(db_id);
    SELECT CASE WHEN EXISTS (
        SELECT 1 FROM app_jobs.jobs AS j
        WHERE j.id = job_id AND j.database_id IS NOT DISTINCT FROM db_id
    ) THEN app_jobs.cancel_job(job_id) END AS cancel_job;
$$;

-- One job of tenant db_id as the shard's job_status view shows it (no row: the shard of
-- that tenant has no such job of that tenant).
CREATE OR REPLACE FUNCTION app_jobs.job_status(
    job_id bigint,
    db_id uuid DEFAULT nullif(
        current_setting('jwt.claims.database_id', TRUE), ''
    )::uuid
) RETURNS SETOF app_jobs.job_status
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjobs_shards';
    RUN ON app_jobs.shard_hash(db_id);
    SELECT s.* FROM app_jobs.job_status AS s
    WHERE s.id = job_id AND (
        EXISTS (
            SELECT 1 FROM app_jobs.jobs AS j
            WHERE j.id = job_id AND j.database_id IS NOT DISTINCT FROM db_id
        )
        OR EXISTS (
            SELECT 1 FROM app_jobs.job_history AS h
            WHERE h.job_id = job_id AND h.database_id IS NOT DISTINCT FROM db_id
        )
    );
$$;

-- Every shard's queue_stats rows (RUN ON ALL); the queue_stats view adds them up.
CREATE OR REPLACE FUNCTION app_jobs._shard_queue_stats() RETURNS SETOF app_jobs.queue_stats_row
LANGUAGE plproxy
AS $$
    CLUSTER 'pgjobs_shards';
    RUN ON ALL;
    SELECT s.* FROM app_jobs.queue_stats AS s;
$$;

-- Per task and queue over all shards: the shards' queue_stats added up (oldest_waiting:
-- the oldest on any shard).
CREATE OR REPLACE VIEW app_jobs.queue_stats AS
SELECT
    s.task_identifier,
    s.queue_name,
    sum(s.waiting)::bigint AS waiting,
    sum(s.scheduled)::bigint AS scheduled,
    sum(s.running)::bigint AS running,
    sum(s.retrying)::bigint AS retrying,
    sum(s.failed)::bigint AS failed,
    sum(s.blocked)::bigint AS blocked,
    max(s.oldest_waiting) AS oldest_waiting,
    sum(s.completed_last_5m)::bigint AS completed_last_5m,
    sum(s.failed_last_5m)::bigint AS failed_last_5m,
    sum(s.cancelled_last_5m)::bigint AS cancelled_last_5m,
    sum(s.completed_per_minute) AS completed_per_minute,
    sum(s.failed_per_minute) AS failed_per_minute
FROM app_jobs._shard_queue_stats() AS s
GROUP BY s.task_identifier, s.queue_name;
