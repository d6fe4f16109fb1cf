#!/usr/bin/env bash
# make screenshots: doc/images/overview.png and doc/images/job.png, taken by the dashboard's
# browser test (tests_py/test_web_browser.py) on a throwaway cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
cluster=$(mktemp -d "${TMPDIR:-/tmp}/pgjobs-shots.XXXXXX")
trap 'bash scripts/pgcluster.sh stop "$cluster"; rm -rf "$cluster"' EXIT
eval "$(bash scripts/pgcluster.sh start "$cluster")"
make -s install DESTDIR="$PGJOBS_TREE" >/dev/null
PGJOBS_DOC_IMAGES=doc/images .venv/bin/pytest -q tests_py/test_web_browser.py -k filter_open_retry
ls -l doc/images/overview.png doc/images/job.png
