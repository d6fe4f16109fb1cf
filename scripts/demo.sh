#!/usr/bin/env bash
# make demo: enqueue a realistic mix of jobs and watch pgjobs-worker run them.
# Uses DATABASE_URL when given, else a throwaway local cluster that it stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

if [ -z "${DATABASE_URL:-}" ]; then
    cluster=$(mktemp -d "${TMPDIR:-/tmp}/pgjobs-demo.XXXXXX")
    trap 'bash scripts/pgcluster.sh stop "$cluster"; rm -rf "$cluster"' EXIT
    eval "$(bash scripts/pgcluster.sh start "$cluster")"
    make -s install DESTDIR="$PGJOBS_TREE" >/dev/null
    createdb pgjobs_demo
    export DATABASE_URL="postgresql:///pgjobs_demo?host=$PGHOST&port=$PGPORT&user=postgres"
    .venv/bin/pgjobs install --extension
else
    .venv/bin/pgjobs install
fi

echo "== enqueue: 8 emails at two priorities, a delayed report, a flaky call, an ordered queue, 2 trigger jobs"
psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 -f examples/demo.sql >/dev/null
.venv/bin/pgjobs status

echo "== pgjobs-worker --tasks examples/tasks.py --concurrency 4"
.venv/bin/pgjobs-worker --tasks examples/tasks.py --concurrency 4 --poll-interval 0.5 &
worker=$!
for _ in $(seq 1 120); do
    left=$(psql "$DATABASE_URL" -X -At -c "SELECT count(*) FROM app_jobs.jobs")
    [ "$left" = 0 ] && break
    sleep 0.5
done
kill -TERM "$worker"
wait "$worker"

echo "== pgjobs status"
.venv/bin/pgjobs status
