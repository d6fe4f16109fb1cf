#!/usr/bin/env bash
# make bench: benchmarks on a throwaway cluster with default durability (fsync and
# synchronous_commit on). Today: one scheduler tick with 10,000 schedules, 100 due.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
cluster=$(mktemp -d "${TMPDIR:-/tmp}/pgjobs-bench.XXXXXX")
trap 'bash scripts/pgcluster.sh stop "$cluster"; rm -rf "$cluster"' EXIT
eval "$(PGJOBS_TEST_FSYNC=on PGJOBS_TEST_SYNC_COMMIT=on bash scripts/pgcluster.sh start "$cluster")"
make -s install DESTDIR="$PGJOBS_TREE" >/dev/null
.venv/bin/python bench/scheduler_tick.py
