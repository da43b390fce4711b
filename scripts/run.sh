#!/usr/bin/env bash
# run.sh: what `make run` runs after setup and build. Starts, in the foreground:
#   - a private PostgreSQL 15 under ./var/pg (port 5433, 127.0.0.1 only, socket in ./var/pg,
#     pg_stat_statements and hypopg preloaded, database `quaver`), unless DATABASE_URL is set;
#   - a private redis-server under ./var/redis (port 6380), unless REDIS_URL is set;
#   - the five daemons from $QUAVER_BUILD/bin (default ./build/bin), logs in ./var/log/;
# waits for /readyz, prints the gateway's URL, and stays until Ctrl-C or SIGTERM, which stop
# everything it started (no process is left behind). A second run reuses ./var (the database,
# the audio files and the JWT secret in ./var/jwt_secret).
#
# Ports and settings can be changed through the daemons' own environment names, e.g.
#   QUAVER_HTTP_PORT=9090 make run
# (see `build/bin/quaver-gateway --print-config` and the other daemons' tables).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${QUAVER_BIN:-$ROOT/${QUAVER_BUILD:-build}/bin}
VAR=$ROOT/var
LOG=$VAR/log
PG_BIN=/usr/lib/postgresql/15/bin
PG_PORT=${QUAVER_PG_PORT:-5433}
REDIS_PORT=${QUAVER_REDIS_PORT:-6380}
DAEMONS=(monitor gateway dbopt cache stream)   # start order: the bus, the broker, workers

for d in "${DAEMONS[@]}"; do
  if [ ! -x "$BIN/quaver-$d" ]; then
    echo "run: $BIN/quaver-$d is missing; run \`make build\` first" >&2
    exit 1
  fi
done

mkdir -p "$VAR" "$LOG"
chmod 755 "$VAR"          # the postgres user must traverse it
say() { echo "run: $*"; }

# ---- stopping: everything we started, in reverse order --------------------------------------
PIDS=()         # daemons, in start order
NAMES=()
REDIS_PID=
PG_DATA=
PG_STARTED=0
stopping=0
as_pg() { if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

stop_pid() {    # pid name: SIGTERM, up to 10 s, then SIGKILL
  local pid=$1 name=$2 i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name did not stop in 10 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

stop_all() {
  [ "$stopping" = 1 ] && return
  stopping=1
  trap '' INT TERM
  say "stopping"
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    stop_pid "${PIDS[$i]}" "${NAMES[$i]}"
  done
  if [ -n "$REDIS_PID" ]; then stop_pid "$REDIS_PID" redis-server; fi
  if [ "$PG_STARTED" = 1 ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true
  fi
  say "stopped"
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

# ---- PostgreSQL -------------------------------------------------------------------------------
if [ -z "${DATABASE_URL:-}" ]; then
  PG_DIR=$VAR/pg
  PG_LOG=$LOG/postgres.log
  # initdb and pg_ctl refuse root, so the cluster belongs to postgres, who must be able to
  # reach ./var/pg. When a parent folder (a home directory, say) is closed to it, the cluster
  # lives in a fixed folder under /var/tmp named after this checkout, so it is reused too.
  if [ "$(id -u)" -eq 0 ]; then
    mkdir -p "$PG_DIR"
    chown postgres: "$PG_DIR"
    if ! runuser -u postgres -- test -x "$PG_DIR" 2>/dev/null; then
      PG_DIR=/var/tmp/quaver-pg-$(printf '%s' "$ROOT" | md5sum | cut -c1-10)
      mkdir -p "$PG_DIR"
      chown postgres: "$PG_DIR"
      PG_LOG=$PG_DIR/postgres.log
      say "postgres cannot reach $VAR/pg; using $PG_DIR (log: $PG_LOG)"
    fi
  fi
  mkdir -p "$PG_DIR"
  chmod 700 "$PG_DIR"
  PG_DATA=$PG_DIR/data
  PG_SOCK=$PG_DIR
  # A unix socket path must fit in 107 bytes.
  if [ $(( ${#PG_SOCK} + 16 )) -gt 100 ]; then PG_SOCK=/tmp; fi
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    say "initdb $PG_DATA"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C \
      --no-instructions >"$LOG/initdb.log" 2>&1 ||
      { cat "$LOG/initdb.log" >&2; exit 1; }
  fi
  # A postmaster left by a run that was killed -9: stop it, then start it as ours.
  if as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    say "stopping a PostgreSQL left running from an earlier run"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
  fi
  touch "$PG_LOG"
  chown postgres: "$PG_LOG" 2>/dev/null || true
  say "starting PostgreSQL 15 on 127.0.0.1:$PG_PORT"
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 -o \
    "-p $PG_PORT -k $PG_SOCK -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements,hypopg" \
    start >/dev/null || { tail -20 "$PG_LOG" >&2; exit 1; }
  PG_STARTED=1
  psql_() { PGOPTIONS='-c client_min_messages=warning' "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -tA "$@"; }
  if [ "$(psql_ -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'quaver'")" != 1 ]; then
    psql_ -d postgres -c 'CREATE DATABASE quaver'
  fi
  psql_ -d quaver -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements' \
        -c 'CREATE EXTENSION IF NOT EXISTS hypopg'
  export DATABASE_URL="postgresql://postgres@127.0.0.1:$PG_PORT/quaver"
else
  say "using DATABASE_URL from the environment"
fi

# ---- Redis ------------------------------------------------------------------------------------
if [ -z "${REDIS_URL:-}" ]; then
  mkdir -p "$VAR/redis"
  say "starting redis-server on 127.0.0.1:$REDIS_PORT"
  /usr/bin/redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$VAR/redis" \
    --daemonize no --appendonly no --save "300 1" --logfile "$LOG/redis.log" </dev/null &
  REDIS_PID=$!
  for i in $(seq 100); do
    if [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then break; fi
    kill -0 "$REDIS_PID" 2>/dev/null || { tail -20 "$LOG/redis.log" >&2; exit 1; }
    sleep 0.1
  done
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
else
  say "using REDIS_URL from the environment"
fi

# ---- the daemons ------------------------------------------------------------------------------
if [ ! -s "$VAR/jwt_secret" ]; then
  (umask 077; head -c 48 /dev/urandom | od -An -v -tx1 | tr -d ' \n' >"$VAR/jwt_secret")
  say "made a JWT secret in var/jwt_secret"
fi
mkdir -p "$VAR/audio"
HTTP_PORT=${QUAVER_HTTP_PORT:-8080}
export QUAVER_HTTP_PORT=$HTTP_PORT
export QUAVER_JWT_SECRET=${QUAVER_JWT_SECRET:-$(cat "$VAR/jwt_secret")}
export QUAVER_STORAGE_DIR=${QUAVER_STORAGE_DIR:-$VAR/audio}
export QUAVER_BROKER=${QUAVER_BROKER:-tcp://127.0.0.1:5555}
export QUAVER_BUS_PUB=${QUAVER_BUS_PUB:-tcp://127.0.0.1:5556}
export QUAVER_BUS_SUB=${QUAVER_BUS_SUB:-tcp://127.0.0.1:5557}

for d in "${DAEMONS[@]}"; do
  echo "==== $(date -u +%FT%TZ) start" >>"$LOG/$d.log"
  "$BIN/quaver-$d" >>"$LOG/$d.log" 2>&1 </dev/null &
  PIDS+=($!)
  NAMES+=("$d")
done

check_alive() {
  local i
  for i in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
      say "quaver-${NAMES[$i]} exited; the end of var/log/${NAMES[$i]}.log:"
      tail -20 "$LOG/${NAMES[$i]}.log" >&2
      return 1
    fi
  done
}

all_alive() {
  local p
  for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || return 1; done
}

URL=http://127.0.0.1:$HTTP_PORT
ready=0
for i in $(seq 600); do
  check_alive || exit 1
  if curl -fsS -m 2 -o /dev/null "$URL/readyz" 2>/dev/null; then ready=1; break; fi
  sleep 0.1
done
if [ "$ready" != 1 ]; then
  say "not ready after 60 s ($URL/readyz); logs in var/log/"
  exit 1
fi

cat <<EOF

  Quaver is up: $URL
  try it:   curl -s $URL/api/health
  logs:     var/log/   data: var/   stop: Ctrl-C

EOF

# Stay in the foreground; a daemon that dies takes the whole run down with its log tail.
# A Ctrl-C reaches the daemons too (same process group), so they may exit before our trap
# runs: the signal only sets a flag here, and a death seen within a moment of it is no news.
got_signal=
trap 'got_signal=130' INT
trap 'got_signal=143' TERM
while [ -z "$got_signal" ]; do
  if ! all_alive; then
    sleep 0.5 &
    wait $! || true
    [ -n "$got_signal" ] && break
    check_alive || true
    exit 1
  fi
  sleep 1 &
  wait $! || true
done
stop_all
# Ctrl-C is how a run is meant to end: an orderly stop is success, so make says nothing.
exit 0
