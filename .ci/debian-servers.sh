#!/usr/bin/env bash
# Run one command against PostgreSQL and Redis from Debian's packages (`postgresql`,
# `redis-server`), started here for that command only: a throwaway cluster and a Redis without
# persistence, each on a free loopback port with a random password, reached through DATABASE_URL
# and REDIS_URL (so the project starts no embedded server). Both stop when the command ends.
#
#   .ci/debian-servers.sh .venv/bin/python -m pytest -m external -q
#
# As root, missing packages are installed with apt-get (their distro services are never started:
# policy-rc.d refuses) and PostgreSQL runs as the `postgres` system user, since it refuses root.
# As another user, both run as that user and the packages must already be installed.
# Exit status: the command's.
set -euo pipefail

log() { printf 'debian-servers: %s\n' "$*" >&2; }

pg_bin() { find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' -printf '%h\n' 2>/dev/null | sort -V | tail -n 1; }

install_packages() {
  local missing=()
  [ -n "$(pg_bin)" ] || missing+=(postgresql)
  command -v redis-server >/dev/null || missing+=(redis-server)
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    log "missing ${missing[*]}: run 'sudo apt-get install ${missing[*]}' (as root, this script does)"
    exit 1
  fi
  log "installing ${missing[*]} from Debian's packages"
  # Maintainer scripts start a package's service unless policy-rc.d says no (exit 101). Ours are
  # started below, on ports of our own; the distro's stay down.
  local policy=/usr/sbin/policy-rc.d
  if [ -e "$policy" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
    local code=0
    { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    } || code=$?
    rm -f "$policy"
    [ "$code" -eq 0 ] || exit "$code"
  fi
}

[ "$#" -gt 0 ] || { log "usage: $0 COMMAND [ARG...]"; exit 2; }
install_packages
PG_BIN=$(pg_bin)
[ -n "$PG_BIN" ] || { log "no initdb under /usr/lib/postgresql/*/bin"; exit 1; }

# PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` system user.
if [ "$(id -u)" = 0 ]; then
  DB_USER=postgres
  as_db_user() { (cd / && runuser -u postgres -- "$@"); }
else
  DB_USER=$(id -un)
  as_db_user() { (cd / && "$@"); }
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/debian-servers.XXXXXX")
chmod 711 "$WORK"  # the postgres user must reach its own directory inside
PG_DIR=$WORK/postgres  # data, log and unix socket; private to the cluster's owner
REDIS_DIR=$WORK/redis
mkdir -m 700 "$PG_DIR" "$REDIS_DIR"
chown "$DB_USER" "$PG_DIR"
PG_STARTED=
REDIS_PID=

stop_servers() {
  local code=$?
  trap - EXIT INT TERM
  if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then
    kill -TERM "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  if [ -n "$PG_STARTED" ]; then
    as_db_user "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop >/dev/null ||
      log "pg_ctl stop failed; see $PG_DIR/log"
  fi
  if [ "$code" -eq 0 ]; then
    rm -rf "$WORK"
  else
    log "servers' logs kept in $PG_DIR/log and $REDIS_DIR/log"
  fi
  exit "$code"
}
trap stop_servers EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Two distinct free loopback ports (held together while chosen, so they differ).
read -r PG_PORT REDIS_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
')
PG_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
REDIS_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')

# PostgreSQL: superuser over the private socket only (trust), the app's role over TCP (password).
as_db_user "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -E UTF8 --locale=C.UTF-8 \
  --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 ||
  { cat "$PG_DIR/initdb.log" >&2; exit 1; }
as_db_user "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR" start >/dev/null ||
  { cat "$PG_DIR/log" >&2; exit 1; }
PG_STARTED=1
# The role the app uses everywhere: no superuser, CREATEDB for the test suite's database.
as_db_user "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR" -p "$PG_PORT" -U postgres \
  -d postgres -v password="$PG_PASSWORD" >/dev/null <<'SQL'
CREATE ROLE cartrecovery LOGIN CREATEDB NOSUPERUSER NOCREATEROLE PASSWORD :'password';
CREATE DATABASE cartrecovery OWNER cartrecovery;
SQL

# Redis: loopback, password, no RDB snapshots, no AOF.
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --requirepass "$REDIS_PASSWORD" \
  --save '' --appendonly no --dir "$REDIS_DIR" --logfile "$REDIS_DIR/log" --daemonize no &
REDIS_PID=$!
redis_ping() { REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null; }
for _ in $(seq 100); do
  [ "$(redis_ping)" = PONG ] && break
  kill -0 "$REDIS_PID" 2>/dev/null || { cat "$REDIS_DIR/log" >&2; exit 1; }
  sleep 0.1
done
[ "$(redis_ping)" = PONG ] || { log "redis-server did not answer"; cat "$REDIS_DIR/log" >&2; exit 1; }

export DATABASE_URL="postgresql://cartrecovery:$PG_PASSWORD@127.0.0.1:$PG_PORT/cartrecovery"
export REDIS_URL="redis://:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT/0"
log "$("$PG_BIN/postgres" --version) on 127.0.0.1:$PG_PORT (as $DB_USER)," \
  "$(redis-server --version | cut -d' ' -f1-3) on 127.0.0.1:$REDIS_PORT"
log "DATABASE_URL=postgresql://cartrecovery:***@127.0.0.1:$PG_PORT/cartrecovery" \
  "REDIS_URL=redis://:***@127.0.0.1:$REDIS_PORT/0"

code=0
"$@" || code=$?
exit "$code"
