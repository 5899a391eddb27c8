#!/usr/bin/env bash
# A throwaway PostgreSQL server for the registry's tests (Debian's postgresql package).
#
#   pg_server.sh start STATE_DIR [WATCH_PID]   initdb + pg_ctl start on 127.0.0.1 and a free port;
#                                              writes STATE_DIR/conninfo (a superuser conninfo)
#   pg_server.sh stop STATE_DIR                stops the server and removes its data folder
#
# `start` does nothing when MODELPORT_TEST_PG names an existing server. When the binaries are
# missing, it writes the reason to STATE_DIR/skip and exits 0, so the tests skip. The data folder is a fresh mktemp -d (its path in STATE_DIR/datadir), owned by the
# `postgres` user when running as root, since initdb and postgres refuse to run as root. With
# WATCH_PID, a detached watcher stops the server once that process is gone (even if it died by
# SIGKILL, when no atexit handler runs). `start` first stops a server a previous run left in
# STATE_DIR (an interrupted ctest).
set -euo pipefail

cmd=${1:?usage: pg_server.sh start|stop STATE_DIR [WATCH_PID]}
state=${2:?usage: pg_server.sh start|stop STATE_DIR [WATCH_PID]}
watch_pid=${3:-}

shopt -s nullglob
bindirs=(/usr/lib/postgresql/*/bin)
bindir=
if ((${#bindirs[@]})); then bindir=$(printf '%s\n' "${bindirs[@]}" | sort -V | tail -n 1); fi

as_pg() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

stop_server() {
  local data
  data=$(cat "$state/datadir" 2>/dev/null || true)
  if [[ -n "$data" && -d "$data" ]]; then
    if [[ -f "$data/pgdata/postmaster.pid" && -n "$bindir" ]]; then
      # Immediate: a throwaway server has nothing worth a clean shutdown checkpoint.
      as_pg "$bindir/pg_ctl" stop -D "$data/pgdata" -m immediate -w -t 30 >/dev/null 2>&1 || true
    fi
    rm -rf "$data"
  fi
  rm -f "$state/datadir" "$state/conninfo" "$state/skip" "$state/log"
}

case "$cmd" in
  stop)
    stop_server
    rmdir "$state" 2>/dev/null || true
    exit 0
    ;;
  start) ;;
  *)
    echo "pg_server.sh: unknown command '$cmd' (start or stop)" >&2
    exit 2
    ;;
esac

mkdir -p "$state"
stop_server
if [[ -n "${MODELPORT_TEST_PG:-}" ]]; then
  exit 0  # the tests use that server (pg_server.h) and never read this folder
fi
if [[ -z "$bindir" || ! -x "$bindir/initdb" ]]; then
  echo "PostgreSQL server binaries are absent (/usr/lib/postgresql/*/bin/initdb; apt-get install postgresql)" >"$state/skip"
  exit 0
fi
if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
  echo "running as root and there is no 'postgres' user to run the server as" >"$state/skip"
  exit 0
fi

data=$(mktemp -d "${TMPDIR:-/tmp}/modelport-pg.XXXXXX")
echo "$data" >"$state/datadir"
if [[ $(id -u) -eq 0 ]]; then chown postgres: "$data"; fi
# A throwaway server: no durability needed (fsync off), trust auth on loopback only.
if ! as_pg "$bindir/initdb" -D "$data/pgdata" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
  --no-sync --no-instructions >"$state/log" 2>&1; then
  echo "pg_server.sh: initdb failed:" >&2
  cat "$state/log" >&2
  stop_server
  exit 1
fi
cat >>"$data/pgdata/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$data'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF

# A port nobody listens on now; if another process takes it first, postgres fails to bind and
# the next try picks another.
port_in_use() {
  local hex
  hex=$(printf ':%04X ' "$1")
  grep -q "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
started=0
for _ in 1 2 3 4 5 6 7 8; do
  port=$((20000 + RANDOM % 30000))
  port_in_use "$port" && continue
  if as_pg "$bindir/pg_ctl" start -D "$data/pgdata" -w -t 60 -o "-p $port" \
    -l "$data/server.log" >/dev/null 2>&1; then
    started=1
    break
  fi
done
if [[ $started -ne 1 ]]; then
  echo "pg_server.sh: pg_ctl start failed; server log:" >&2
  tail -n 20 "$data/server.log" >&2 || true
  stop_server
  exit 1
fi
echo "host=127.0.0.1 port=$port user=postgres dbname=postgres" >"$state/conninfo"

if [[ -n "$watch_pid" ]]; then
  # Detached, with no inherited descriptors, so whoever ran us does not wait for it.
  # shellcheck disable=SC2016  # the inner script expands its own arguments
  setsid bash -c '
    while kill -0 "$1" 2>/dev/null && [[ -d "$2" ]]; do sleep 1; done
    exec bash "$3" stop "$4"' watcher "$watch_pid" "$data" "$0" "$state" \
    </dev/null >/dev/null 2>&1 &
fi
