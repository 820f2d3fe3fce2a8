#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on loopback for the ledger's backend tests.
# Installs it from Debian's packages when missing. Prints the connection URL on stdout.
# Usage: eval "$(bash .ci/postgres.sh)"   # exports MODELGUARD_TEST_POSTGRES_URL
#        bash .ci/postgres.sh stop        # stops the server at MODELGUARD_PG_DATA
set -euo pipefail
PORT="${MODELGUARD_PG_PORT:-54329}"
DATA="${MODELGUARD_PG_DATA:-/tmp/modelguard-pg}"

pg_bin() {
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
    echo "$dir"
}

if [ -z "$(pg_bin)" ]; then
    echo "installing postgresql from Debian packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null) >&2
fi
BIN="$(pg_bin)"
RUN_AS=()
if [ "$(id -u)" = "0" ]; then
    RUN_AS=(runuser -u postgres --)
fi

if [ "${1:-}" = "stop" ]; then
    "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >&2
    exit 0
fi

if ! "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    rm -rf "$DATA"
    mkdir -p "$DATA"
    [ "$(id -u)" = "0" ] && chown postgres:postgres "$DATA"
    "${RUN_AS[@]}" "$BIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
    "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DATA -c fsync=on" start >&2
    # Tell the caller it owns this server (.ci/run stops it on exit; a server that was
    # already running belongs to someone else and is left alone).
    echo "export MODELGUARD_PG_STARTED=$DATA"
fi
echo "export MODELGUARD_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PORT/postgres"
