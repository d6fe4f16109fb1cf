-- True when this session asked for enqueues of the task to be dropped (test helpers):
-- pgjobs.ignore_enqueues is 'all' or a comma-separated list of task identifiers (an empty
-- setting is an empty list: it ignores no task, not the task named '').
CREATE FUNCTION app_jobs._enqueue_ignored(p_identifier text) RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(
        current_setting('pgjobs.ignore_enqueues', TRUE) = 'all'
        OR p_identifier = ANY(
            regexp_split_to_array(
                nullif(trim(current_setting('pgjobs.ignore_enqueues', TRUE)), ''), '\s*,\s*'
            )
        ),
        FALSE
    );
$$;
