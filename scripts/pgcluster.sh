#!/usr/bin/env bash
# Start or stop a throwaway PostgreSQL cluster under DIR, with a private copy of
# the server's install tree so extensions can be installed without touching the
# system (make install DESTDIR=$PGJOBS_TREE).
#   pgcluster.sh start DIR   prints shell exports: PGHOST PGPORT PGUSER PGJOBS_TREE ...
#   pgcluster.sh stop DIR
set -euo pipefail

cmd=${1:?usage: pgcluster.sh start|stop DIR}
dir=${2:?usage: pgcluster.sh start|stop DIR}
pg_config=${PG_CONFIG:-pg_config}

# PostgreSQL refuses to run as root: use the postgres OS user then.
as_server_user() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

stop() {
    local bindir
    bindir="$dir/tree$($pg_config --bindir)"
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_server_user "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
}

start() {
    local bindir sharedir pkglibdir tree port
    bindir=$($pg_config --bindir)
    sharedir=$($pg_config --sharedir)
    pkglibdir=$($pg_config --pkglibdir)
    tree="$dir/tree"

    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    mkdir -p "$dir" "$tree$bindir" "$tree$sharedir/extension" "$(dirname "$tree$pkglibdir")"
    chmod 755 "$dir"
    # Real copies of the binaries (the server resolves its own path through
    # symlinks), symlinks for everything else, a real extension directory.
    for b in postgres initdb pg_ctl; do cp "$bindir/$b" "$tree$bindir/"; done
    ln -sfn "$pkglibdir" "$tree$pkglibdir"
    for f in "$sharedir"/*; do
        [ "$(basename "$f")" = extension ] || ln -sfn "$f" "$tree$sharedir/"
    done
    for f in "$sharedir"/extension/*; do
        # The system's own pgjobs files (if any) must not mix with the ones under test.
        case $(basename "$f") in pgjobs*) continue ;; esac
        ln -sf "$f" "$tree$sharedir/extension/"
    done
    chmod -R a+rX "$tree"

    mkdir -p "$dir/data" "$dir/sock" "$dir/log"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir/data" "$dir/sock" "$dir/log"; fi
    chmod 777 "$dir/sock"

    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_server_user "$tree$bindir/initdb" -D "$dir/data" -U postgres -A trust \
        --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/sock'
max_connections = 200
fsync = ${PGJOBS_TEST_FSYNC:-off}
synchronous_commit = ${PGJOBS_TEST_SYNC_COMMIT:-off}
full_page_writes = ${PGJOBS_TEST_FSYNC:-off}
log_min_messages = warning
CONF
    as_server_user "$tree$bindir/pg_ctl" -D "$dir/data" -l "$dir/log/server.log" -w -t 60 start >/dev/null \
        || { cat "$dir/log/server.log" >&2; exit 1; }

    echo "export PGHOST='$dir/sock' PGPORT=$port PGUSER=postgres"
    echo "export PGJOBS_TREE='$tree' PGJOBS_CLUSTER_DIR='$dir'"
    echo "export PGJOBS_PG_BINDIR='$tree$bindir'"
}

case $cmd in
    start) start ;;
    stop) stop ;;
    *) echo "unknown command: $cmd" >&2; exit 2 ;;
esac
