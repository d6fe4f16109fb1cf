-- pgjobs 0.5.0 -> 0.6.0: performance (issue 12). Written by hand: only what changed.

-- The version of the app_jobs objects, for installs without CREATE EXTENSION.
CREATE OR REPLACE FUNCTION app_jobs.pgjobs_version() RETURNS text
LANGUAGE sql IMMUTABLE
AS $$ SELECT '0.6.0'::text $$;
