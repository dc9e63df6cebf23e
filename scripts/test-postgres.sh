#!/usr/bin/env bash
# A private PostgreSQL for the tests and benchmarks: its own data folder and port under a temp
# folder, listening on loopback only. PostgreSQL refuses to run as root, so as root the server
# runs as the `postgres` user.
#
#   eval "$(scripts/test-postgres.sh start)"   # prints: export SWARM_TEST_POSTGRES_URL=…
#   npm test                                   # the PostgreSQL tests now run
#   scripts/test-postgres.sh stop              # stops the server and removes its folder
#   scripts/test-postgres.sh halt|resume       # (tests) stop the server at once, keeping its data; start it again
#
# Needs Debian's `postgresql` package (initdb and pg_ctl under /usr/lib/postgresql/<n>/bin).
set -euo pipefail

find_bin() {
  local name=$1
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -n "$found" ] && [ -x "$found/$name" ]; then echo "$found/$name"; return; fi
  echo "test-postgres: $name not found; install PostgreSQL (apt-get install -y postgresql)" >&2
  exit 1
}

as_server_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

state_file=${TEST_POSTGRES_STATE:-${TMPDIR:-/tmp}/swarm-test-postgres.env}

case "${1:-}" in
  start)
    initdb=$(find_bin initdb)
    pg_ctl=$(find_bin pg_ctl)
    dir=$(mktemp -d "${TMPDIR:-/tmp}/swarm-pg.XXXXXX")
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
    as_server_user "$initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; exit 1; }
    # Room for the tests' parallel workers, each with its own pool.
    # Its settings live in the data folder, so that `resume` starts it as it was.
    printf '%s\n' "listen_addresses = '127.0.0.1'" "port = $port" "unix_socket_directories = '$dir'" \
      "max_connections = 400" "shared_buffers = 256MB" | as_server_user tee -a "$dir/data/postgresql.conf" >/dev/null
    as_server_user "$pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null ||
      { cat "$dir/server.log" >&2; exit 1; }
    url="postgres://postgres@127.0.0.1:$port/postgres"
    printf 'TEST_POSTGRES_DIR=%q\n' "$dir" >"$state_file"
    echo "export SWARM_TEST_POSTGRES_URL=$url"
    ;;
  stop)
    # The state file names the server: a variable inherited from the caller could name another.
    dir=""
    if [ -f "$state_file" ]; then
      # shellcheck disable=SC1090
      . "$state_file"
      dir=${TEST_POSTGRES_DIR:-}
    fi
    if [ -z "$dir" ] || [ ! -d "$dir/data" ]; then
      echo "test-postgres: no server to stop" >&2
      exit 0
    fi
    as_server_user "$(find_bin pg_ctl)" -D "$dir/data" -m fast -w stop >/dev/null || true
    rm -rf "$dir" "$state_file"
    ;;
  halt | resume)
    dir=""
    if [ -f "$state_file" ]; then
      # shellcheck disable=SC1090
      . "$state_file"
      dir=${TEST_POSTGRES_DIR:-}
    fi
    [ -n "$dir" ] && [ -d "$dir/data" ] || { echo "test-postgres: no server" >&2; exit 1; }
    if [ "$1" = halt ]; then
      # As a crash would: connections cut, no shutdown checkpoint.
      as_server_user "$(find_bin pg_ctl)" -D "$dir/data" -m immediate -w stop >/dev/null
    else
      as_server_user "$(find_bin pg_ctl)" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null
    fi
    ;;
  *)
    echo "usage: $0 start|stop|halt|resume" >&2
    exit 2
    ;;
esac
