#!/usr/bin/env bash
# make bench / make bench-quick: every benchmark case (bench/run.py) on a throwaway
# cluster with PostgreSQL's default durability (fsync and synchronous_commit on).
#   scripts/bench.sh [--quick] [--only F,A,B,C,D,E,tick,W] [--churn-seconds S]
# Prints the table and writes bench/results/<timestamp>.json and latest.json.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh

# pgbench ships with the server binaries (Debian: postgresql-15).
bindir=$(pg_config --bindir)
if [ -z "${PGBENCH:-}" ]; then
    PGBENCH="$bindir/pgbench"
fi
if [ ! -x "$PGBENCH" ]; then
    echo "bench: pgbench not found at $PGBENCH (install the PostgreSQL server package or set PGBENCH)" >&2
    exit 1
fi
export PGBENCH

cluster=$(mktemp -d "${TMPDIR:-/tmp}/pgjobs-bench.XXXXXX")
trap 'bash scripts/pgcluster.sh stop "$cluster"; rm -rf "$cluster"' EXIT
# pgcluster.sh defaults both to off for the tests: the benchmarks need them on.
eval "$(PGJOBS_TEST_FSYNC=on PGJOBS_TEST_SYNC_COMMIT=on bash scripts/pgcluster.sh start "$cluster")"
make -s install DESTDIR="$PGJOBS_TREE" >/dev/null
unset PGDATABASE DATABASE_URL
.venv/bin/python -m bench.run "$@"
