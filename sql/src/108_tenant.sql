-- True when the caller may act on rows of tenant p_db_id. The caller is the role in
-- effect where the pgjobs function was called: inside a SECURITY DEFINER function
-- current_user is the owner, so this reads the "role" setting (what SET ROLE chose,
-- which a definer function cannot change) and falls back to session_user without SET
-- ROLE. A caller with the privileges of pgjobs_enqueue_any, pgjobs_worker, pgjobs_admin
-- or the schema's owner (superusers included) may act on every tenant; any other caller
-- only on the tenant of its jwt.claims.database_id setting (none without it, NULL
-- included).
CREATE FUNCTION app_jobs._tenant_allowed(p_db_id uuid) RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    -- (PL/pgSQL, not SQL: its plans are kept for the session, where a SQL function's
    -- query would be planned again in every transaction of every enqueue.)
    v_caller name := CASE pg_catalog.current_setting('role')
        WHEN 'none' THEN session_user
        ELSE pg_catalog.current_setting('role')::name
    END;
BEGIN
    IF pg_catalog.pg_has_role(v_caller, 'pgjobs_enqueue_any', 'USAGE')
        OR pg_catalog.pg_has_role(v_caller, 'pgjobs_worker', 'USAGE')
        OR pg_catalog.pg_has_role(v_caller, 'pgjobs_admin', 'USAGE') THEN
        RETURN TRUE;
    END IF;
    IF pg_catalog.pg_has_role(
        v_caller,
        (SELECT n.nspowner FROM pg_catalog.pg_namespace AS n WHERE n.nspname = 'app_jobs'),
        'USAGE'
    ) THEN
        RETURN TRUE;
    END IF;
    RETURN coalesce(
        p_db_id = nullif(pg_catalog.current_setting('jwt.claims.database_id', TRUE), '')::uuid,
        FALSE
    );
END;
$$;

COMMENT ON FUNCTION app_jobs._tenant_allowed IS
'Internal: may the calling role (SET ROLE, else session_user) act on tenant p_db_id?';

-- Raise PJ030 unless the caller may act on tenant p_db_id (see tenant_allowed).
CREATE FUNCTION app_jobs._check_tenant(p_db_id uuid) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF NOT app_jobs._tenant_allowed(p_db_id) THEN
        RAISE EXCEPTION 'permission denied for database_id %', coalesce(p_db_id::text, 'NULL')
            USING ERRCODE = 'PJ030',
            HINT = 'Without the privileges of pgjobs_enqueue_any, pgjobs_worker or '
            || 'pgjobs_admin, a role acts only on the tenant named by its '
            || 'jwt.claims.database_id setting.';
    END IF;
END;
$$;

COMMENT ON FUNCTION app_jobs._check_tenant IS
'Internal: PJ030 unless the calling role may act on tenant p_db_id';
