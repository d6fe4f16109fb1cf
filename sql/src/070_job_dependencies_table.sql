-- Which unfinished jobs a job waits for; a row goes when its dependency completes.
CREATE TABLE app_jobs.job_dependencies (
    job_id bigint NOT NULL,
    depends_on bigint NOT NULL,
    PRIMARY KEY (job_id, depends_on)
);

COMMENT ON TABLE app_jobs.job_dependencies IS
'job_id runs only once every depends_on job completed; a failed one cancels it';

-- Dependents of a job, looked up when it stops.
CREATE INDEX job_dependencies_depends_on_idx ON app_jobs.job_dependencies (depends_on);
