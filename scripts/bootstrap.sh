#!/usr/bin/env bash
# Make this machine able to build and test pgjobs: a Python virtual environment
# with the project and its test tools, and pgTAP + pg_prove (Debian packages,
# installed when missing and running as root). chromium (for the dashboard's browser
# tests) is optional: installed when missing and root, else those tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v pg_config >/dev/null || need_pkgs+=(postgresql-client-15)
[ -x "$(pg_config --bindir 2>/dev/null)/postgres" ] || need_pkgs+=(postgresql-15)
command -v pg_prove >/dev/null || need_pkgs+=(libtap-parser-sourcehandler-pgtap-perl)
if ! ls "$(pg_config --sharedir 2>/dev/null)"/extension/pgtap.control >/dev/null 2>&1; then
    need_pkgs+=(postgresql-15-pgtap)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bootstrap: installing ${need_pkgs[*]}"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
    else
        echo "bootstrap: missing ${need_pkgs[*]}; install them (e.g. sudo apt-get install ${need_pkgs[*]})" >&2
        exit 1
    fi
fi

if ! command -v chromium >/dev/null && [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bootstrap: installing chromium (the dashboard's browser tests)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
            || echo "bootstrap: could not install chromium; the browser tests will skip" >&2
    else
        echo "bootstrap: chromium missing: the browser tests skip (apt-get install chromium)" >&2
    fi
fi

stamp=.venv/.pgjobs-stamp
want=$(cat pyproject.toml | sha1sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "bootstrap: preparing .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
    .venv/bin/pip install -q -e '.[dev]'
    echo "$want" >"$stamp"
fi
