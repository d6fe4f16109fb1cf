#!/usr/bin/env bash
# Make this machine able to build and test pgjobs: a Python virtual environment
# with the project and its test tools, pgTAP + pg_prove, and the optional PgBouncer
# (pooler tests) and chromium (the dashboard's browser tests): Debian packages,
# installed when missing and running as root; without them those tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v pg_config >/dev/null || need_pkgs+=(postgresql-client-15)
[ -x "$(pg_config --bindir 2>/dev/null)/postgres" ] || need_pkgs+=(postgresql-15)
command -v pg_prove >/dev/null || need_pkgs+=(libtap-parser-sourcehandler-pgtap-perl)
if ! ls "$(pg_config --sharedir 2>/dev/null)"/extension/pgtap.control >/dev/null 2>&1; then
    need_pkgs+=(postgresql-15-pgtap)
fi
# Optional: without PgBouncer the pooler tests (tests_py/test_pooler.py) are skipped,
# without chromium the dashboard's browser tests (tests_py/test_web_browser.py), without
# PL/Proxy the sharding tests (tests_py/test_sharding.py).
want_pkgs=()
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || want_pkgs+=(pgbouncer)
command -v chromium >/dev/null || [ -x /usr/bin/chromium ] || want_pkgs+=(chromium)
[ -f "$(pg_config --sharedir 2>/dev/null)/extension/plproxy.control" ] \
    || want_pkgs+=(postgresql-15-plproxy)

can_install=false
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then can_install=true; fi

if [ ${#need_pkgs[@]} -gt 0 ] && [ $can_install = false ]; then
    echo "bootstrap: missing ${need_pkgs[*]}; install them (e.g. sudo apt-get install ${need_pkgs[*]} ${want_pkgs[*]})" >&2
    exit 1
fi
if [ ${#want_pkgs[@]} -gt 0 ] && [ $can_install = false ]; then
    echo "bootstrap: ${want_pkgs[*]} not found: the tests that need them will be skipped" \
         "(install with: sudo apt-get install ${want_pkgs[*]})" >&2
    want_pkgs=()
fi
pkgs=("${need_pkgs[@]}" "${want_pkgs[@]}")
if [ ${#pkgs[@]} -gt 0 ]; then
    # Debian's package may start a pgbouncer service (port 6432, /etc/pgbouncer). The
    # tests never use it (each run starts its own on free ports, without a Unix socket),
    # but one that this install started is stopped again: nothing is left listening.
    service_was_up=false
    if [ -s /var/run/postgresql/pgbouncer.pid ]; then service_was_up=true; fi
    echo "bootstrap: installing ${pkgs[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
    if [[ " ${want_pkgs[*]} " == *" pgbouncer "* ]] && [ $service_was_up = false ] \
        && [ -s /var/run/postgresql/pgbouncer.pid ]; then
        echo "bootstrap: stopping the pgbouncer service the package started"
        invoke-rc.d pgbouncer stop >/dev/null 2>&1 || service pgbouncer stop >/dev/null 2>&1 || true
    fi
fi

stamp=.venv/.pgjobs-stamp
want=$(cat pyproject.toml | sha1sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "bootstrap: preparing .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
    # testdata: make verify regenerates the cron test table (croniter).
    .venv/bin/pip install -q -e '.[dev,testdata]'
    echo "$want" >"$stamp"
fi
