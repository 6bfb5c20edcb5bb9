#!/usr/bin/env bash
# A PostgreSQL server of the project's own for tests and the benchmark: Debian's `postgresql`
# (installed with apt when missing), a data folder under target/pg-test/, listening on
# loopback only (and a socket in that folder), run as the `postgres` user, trust auth (it is
# reachable from this machine only and holds throwaway data).
#
#   scripts/pg-test.sh start   init (once) and start it; prints nothing, exits 0 when up
#   scripts/pg-test.sh url     the admin URL (database `postgres`)
#   scripts/pg-test.sh stop    stop it (fast shutdown); the data folder stays
#
# PG_TEST_PORT (default 55411) picks the port, so several checkouts can each run their own.
set -euo pipefail
cd "$(dirname "$0")/.."

port=${PG_TEST_PORT:-55411}
folder=$(pwd -P)/target/pg-test
data=$folder/data

bin_dir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && echo "$dir"
}

as_postgres() {
  if [ "$(id -un)" = postgres ]; then "$@"; else runuser -u postgres -- "$@"; fi
}

case "${1:-}" in
  url)
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  start)
    if ! bin_dir >/dev/null; then
      echo "pg-test: installing Debian's postgresql" >&2
      if [ "$(id -u)" != 0 ]; then
        echo "pg-test: run as root, or install postgresql first" >&2
        exit 1
      fi
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    bin=$(bin_dir)
    mkdir -p "$folder"
    chown postgres: "$folder"
    if [ ! -f "$data/PG_VERSION" ]; then
      as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    if as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      exit 0
    fi
    # Enough connections for three servers and the tests; fsync stays on (a test kills
    # servers, not the machine, so it would not matter, but the numbers should be real).
    as_postgres "$bin/pg_ctl" -D "$data" -l "$folder/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c max_connections=300" start >/dev/null
    ;;
  stop)
    bin=$(bin_dir) || exit 0
    [ -f "$data/PG_VERSION" ] || exit 0
    if as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      as_postgres "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    fi
    ;;
  *)
    echo "usage: scripts/pg-test.sh start|stop|url" >&2
    exit 2
    ;;
esac
