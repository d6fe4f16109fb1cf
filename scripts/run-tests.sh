#!/usr/bin/env bash
# make test: lint SQL and Python, run pgTAP and pytest against a throwaway
# cluster that is always stopped afterwards. Exits non-zero if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh || exit 1
make -s verify || exit 1

cluster=$(mktemp -d "${TMPDIR:-/tmp}/pgjobs-test.XXXXXX")
trap 'bash scripts/pgcluster.sh stop "$cluster"; rm -rf "$cluster"' EXIT
eval "$(bash scripts/pgcluster.sh start "$cluster")" || exit 1
make -s install DESTDIR="$PGJOBS_TREE" >/dev/null || exit 1

failed=()
step() {
    local name=$1; shift
    echo "== $name"
    "$@" || failed+=("$name")
}

createdb pgjobs_test
psql -X -q -v ON_ERROR_STOP=1 -d pgjobs_test \
    -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION pgjobs' || exit 1

step sqlfluff .venv/bin/sqlfluff lint sql/src $(ls sql/pgjobs--*--*.sql 2>/dev/null)
step ruff .venv/bin/ruff check python tests_py bench
step pg_prove pg_prove --ext .sql -d pgjobs_test tests_sql/

# pytest exits 5 when it collected nothing: that is a failure here too.
run_pytest() {
    .venv/bin/pytest -q tests_py "$@"
    local rc=$?
    if [ $rc = 5 ]; then echo "pytest collected no tests" >&2; fi
    return $rc
}
step pytest run_pytest ${PYTEST_ARGS:-}

if [ ${#failed[@]} -gt 0 ]; then
    echo "make test: FAILED steps: ${failed[*]}"
    exit 1
fi
echo "make test: every step succeeded (sqlfluff, ruff, pg_prove, pytest)"
