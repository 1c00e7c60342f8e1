#!/usr/bin/env bash
# The test bed's real data services on loopback: PostgreSQL (the platform database) and Redis
# (the platform cache), standing in for the in-cluster StatefulSet and Deployment.
#
#   testbed/services.sh up       install the Debian packages if missing, start both, seed the schema
#   testbed/services.sh down     stop both
#   testbed/services.sh status   print each service's state; exit 0 only when both are up
#
# The servers are private instances under the git-ignored cache (not the Debian-managed
# cluster or init scripts). Environment:
#   TESTBED_CACHE         cache directory              (default <repo>/.cache/testbed)
#   SAASODOO_DB_PORT      PostgreSQL port on 127.0.0.1 (default 55432)
#   SAASODOO_DB_PASSWORD  password of the role saasodoo (default saasodoo-local)
#   SAASODOO_REDIS_PORT   Redis port on 127.0.0.1      (default 56379)
#   TESTBED_SERVICES_TIMEOUT  readiness timeout in seconds (default 30)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cache=${TESTBED_CACHE:-$repo/.cache/testbed}
pg_port_wanted=${SAASODOO_DB_PORT:-55432}
redis_port_wanted=${SAASODOO_REDIS_PORT:-56379}
db_password=${SAASODOO_DB_PASSWORD:-saasodoo-local}
timeout=${TESTBED_SERVICES_TIMEOUT:-30}
schema_sql=$here/sql/platform_schema.sql
host=127.0.0.1

log() { printf '[services] %s\n' "$*"; }
die() { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

usage() { echo "usage: $0 up|down|status" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------
# Paths and binaries

set_paths() {
  mkdir -p "$cache"
  cache=$(cd "$cache" && pwd)
  pgdir=$cache/pg
  pgdata=$pgdir/data
  pglog=$pgdir/postgres.log
  redisdir=$cache/redis
  redisconf=$redisdir/redis.conf
  redispid=$redisdir/redis.pid
  redislog=$redisdir/redis.log
}

# Highest installed PostgreSQL major with everything the test bed needs (server, client,
# pg_stat_statements from contrib).
find_pg_bindir() {
  local d ver
  pg_bindir=
  pg_version=
  for ver in $(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V -r); do
    d=/usr/lib/postgresql/$ver/bin
    if [ -x "$d/postgres" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/pg_isready" ] \
       && [ -x "$d/psql" ] && [ -f "/usr/share/postgresql/$ver/extension/pg_stat_statements.control" ]; then
      pg_bindir=$d
      pg_version=$ver
      return 0
    fi
  done
  return 1
}

have_redis() { command -v redis-server >/dev/null && command -v redis-cli >/dev/null; }

# install_packages PACKAGE...
install_packages() {
  local sudo=
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "not root and no sudo: install the Debian packages $* first"
    sudo="sudo -n"
  fi
  log "installing Debian packages: $*"
  # Keep the packages' own services (Debian cluster 'main', redis on 6379) from starting:
  # the test bed runs private instances. policy-rc.d is only added if the machine has none.
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    added_policy=1
  fi
  local rc=0 aptlog=$cache/apt-install.log
  {
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update \
    && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
  } >"$aptlog" 2>&1 || rc=$?
  if [ "$added_policy" = 1 ]; then $sudo rm -f "$policy"; fi
  if [ "$rc" -ne 0 ]; then
    tail -n 20 "$aptlog" >&2
    die "apt-get install failed (exit $rc, log: $aptlog)"
  fi
  log "installed (log: $aptlog)"
}

ensure_packages() {
  # Only what is missing, so installed packages are not upgraded behind the user's back.
  local missing=()
  find_pg_bindir || missing+=(postgresql postgresql-contrib)
  have_redis || missing+=(redis-server)
  # Used by the runbooks' tests as real components: Prometheus (metrics_collection,
  # performance_check), PgBouncer (db_performance), dnsmasq (dns_resolution).
  command -v prometheus >/dev/null || [ -x /usr/bin/prometheus ] || missing+=(prometheus)
  command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
  command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
  [ "${#missing[@]}" -eq 0 ] && return 0
  install_packages "${missing[@]}"
  find_pg_bindir || die "PostgreSQL binaries (with pg_stat_statements) not found under /usr/lib/postgresql/*/bin after install"
  have_redis || die "redis-server/redis-cli not found after install"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL. It refuses to run as root, so as root the server runs as the OS user postgres.

pg_os_user_name() {
  if [ "$(id -u)" -eq 0 ]; then pg_os_user=postgres; else pg_os_user=$(id -un); fi
}

ensure_pg_os_user() {
  pg_os_user_name
  if ! id -u "$pg_os_user" >/dev/null 2>&1; then
    log "postgres: creating OS user $pg_os_user"
    useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash "$pg_os_user"
  fi
}

# Run a command as the server's OS user, from / (the caller's cwd may be unreadable to it).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u "$pg_os_user" -- "$@")
  else
    (cd / && "$@")
  fi
}

pg_is_running() {
  [ -n "${pg_bindir:-}" ] && [ -f "$pgdata/PG_VERSION" ] && [ -f "$pgdata/postmaster.pid" ] || return 1
  as_pg "$pg_bindir/pg_ctl" -D "$pgdata" status >/dev/null 2>&1
}

# Port of the running server (postmaster.pid line 4), else the wanted one.
pg_running_port() {
  local p
  p=$(sed -n 4p "$pgdata/postmaster.pid" 2>/dev/null || true)
  echo "${p:-$pg_port_wanted}"
}

pg_ready() { "$pg_bindir/pg_isready" -q -h "$host" -p "$1" -t 2 >/dev/null 2>&1; }

# psql as the superuser over the unix socket in the cache (peer authentication).
pg_admin() {
  local db=$1; shift
  as_pg env PGOPTIONS='-c client_min_messages=warning' \
    "$pg_bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$pgdir" -p "$pg_port" -U "$pg_os_user" -d "$db" "$@"
}

sql_quote() { printf "'%s'" "${1//\'/\'\'}"; }

pg_prepare() {
  mkdir -p "$pgdir"
  chown "$pg_os_user:" "$pgdir"
  chmod 0755 "$pgdir"
  if [ -d "$pgdata" ] && [ "$(stat -c %U "$pgdata")" != "$pg_os_user" ]; then
    chown -R "$pg_os_user:" "$pgdata"
  fi
  as_pg test -w "$pgdir" \
    || die "OS user $pg_os_user cannot write $pgdir: make its parent directories traversable (chmod o+x) or set TESTBED_CACHE to e.g. /tmp/saasodoo-testbed"
  # A unix socket path is limited to 107 bytes.
  local sock="$pgdir/.s.PGSQL.$pg_port_wanted"
  [ "${#sock}" -lt 104 ] || die "socket path $sock is too long for a unix socket; set TESTBED_CACHE to a shorter directory"

  if [ -f "$pgdata/PG_VERSION" ]; then
    local v
    v=$(cat "$pgdata/PG_VERSION")
    [ "$v" = "$pg_version" ] \
      || die "$pgdata was initialised by PostgreSQL $v but $pg_version is installed; remove $pgdir to re-create it"
  else
    log "postgres: initialising $pgdata (PostgreSQL $pg_version)"
    rm -rf "$pgdata" "$pgdata.init"
    as_pg "$pg_bindir/initdb" -D "$pgdata.init" --no-locale -E UTF8 --no-sync \
      --auth-local=peer --auth-host=scram-sha-256 >"$pgdir/initdb.log" 2>&1 \
      || { tail -n 20 "$pgdir/initdb.log" >&2; die "initdb failed (log: $pgdir/initdb.log)"; }
    echo "include_if_exists = 'testbed.conf'" >>"$pgdata.init/postgresql.conf"
    mv "$pgdata.init" "$pgdata"
  fi

  # Rewritten on every start, so a changed SAASODOO_DB_PORT takes effect.
  local sockdir_q
  sockdir_q=$(sql_quote "$pgdir")
  as_pg tee "$pgdata/testbed.conf" >/dev/null <<EOF
# Written by testbed/services.sh on every start; edits are lost.
listen_addresses = '$host'
port = $pg_port_wanted
unix_socket_directories = $sockdir_q
unix_socket_permissions = 0700
max_connections = 50
shared_preload_libraries = 'pg_stat_statements'
fsync = off
synchronous_commit = off
full_page_writes = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
}

pg_up() {
  ensure_pg_os_user
  if pg_is_running; then
    pg_port=$(pg_running_port)
    log "postgres: already running on $host:$pg_port"
    [ "$pg_port" = "$pg_port_wanted" ] \
      || log "postgres: WARNING: running on port $pg_port, not SAASODOO_DB_PORT=$pg_port_wanted (run down, then up)"
  else
    pg_prepare
    pg_port=$pg_port_wanted
    log "postgres: starting on $host:$pg_port"
    # pg_ctl -w waits for the postmaster to come up and notices if it exits instead.
    if ! as_pg "$pg_bindir/pg_ctl" -D "$pgdata" -l "$pglog" -w -t "$timeout" start >/dev/null 9>&-; then
      echo "----- last 20 lines of $pglog -----" >&2
      tail -n 20 "$pglog" >&2 || true
      die "postgres: failed to start on $host:$pg_port (log: $pglog)"
    fi
  fi
  local deadline=$((SECONDS + timeout))
  until pg_ready "$pg_port"; do
    if [ "$SECONDS" -ge "$deadline" ] || ! pg_is_running; then
      echo "----- last 20 lines of $pglog -----" >&2
      tail -n 20 "$pglog" >&2 || true
      die "postgres: not accepting connections on $host:$pg_port after ${timeout}s (log: $pglog)"
    fi
    sleep 0.5
  done
  log "postgres: ready on $host:$pg_port"
  pg_seed
}

pg_seed() {
  log "postgres: applying roles, database and platform schema (idempotent)"
  # The password never appears on a command line; pg_stat_statements must not record it either.
  pg_admin postgres <<EOF
SET pg_stat_statements.track_utility = off;
SELECT 'CREATE ROLE saasodoo LOGIN'
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'saasodoo') \gexec
ALTER ROLE saasodoo WITH LOGIN CREATEDB NOSUPERUSER PASSWORD $(sql_quote "$db_password");
GRANT pg_monitor, pg_signal_backend TO saasodoo;
SELECT 'CREATE DATABASE saasodoo OWNER saasodoo'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'saasodoo') \gexec
ALTER DATABASE saasodoo OWNER TO saasodoo;
EOF
  pg_admin saasodoo -c 'CREATE EXTENSION IF NOT EXISTS pg_stat_statements'
  # Fed on stdin: the repository may not be readable by the postgres OS user.
  { echo 'SET ROLE saasodoo;'; cat "$schema_sql"; } | pg_admin saasodoo \
    || die "postgres: seeding $schema_sql failed"
}

pg_down() {
  if ! pg_is_running; then
    log "postgres: already stopped"
    return 0
  fi
  log "postgres: stopping"
  as_pg "$pg_bindir/pg_ctl" -D "$pgdata" -m fast -w -t "$timeout" stop >/dev/null \
    || die "postgres: pg_ctl stop failed (log: $pglog)"
  log "postgres: stopped"
}

pg_status() {
  if pg_is_running; then
    local port pid
    port=$(pg_running_port)
    pid=$(head -n 1 "$pgdata/postmaster.pid")
    if pg_ready "$port"; then
      log "postgres: running on $host:$port (pid $pid), accepting connections"
      return 0
    fi
    log "postgres: running (pid $pid) but not accepting connections on $host:$port"
    return 1
  fi
  log "postgres: stopped"
  return 1
}

# ---------------------------------------------------------------------------------------------
# Redis

redis_pid() {
  local pid
  [ -f "$redispid" ] || return 1
  pid=$(cat "$redispid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid.
  case "$(cat "/proc/$pid/comm" 2>/dev/null)" in redis-server*|redis-check*) ;; *) return 1 ;; esac
  echo "$pid"
}

# Port of the running server, from the config it was started with.
redis_running_port() {
  local p
  p=$(awk '$1 == "port" { print $2 }' "$redisconf" 2>/dev/null || true)
  echo "${p:-$redis_port_wanted}"
}

redis_ready() { [ "$(redis-cli -h "$host" -p "$1" ping 2>/dev/null)" = PONG ]; }

redis_conf_quote() { local s=${1//\\/\\\\}; printf '"%s"' "${s//\"/\\\"}"; }

redis_up() {
  local port log_lines=0
  if redis_pid >/dev/null; then
    port=$(redis_running_port)
    log "redis: already running on $host:$port"
    [ "$port" = "$redis_port_wanted" ] \
      || log "redis: WARNING: running on port $port, not SAASODOO_REDIS_PORT=$redis_port_wanted (run down, then up)"
  else
    port=$redis_port_wanted
    mkdir -p "$redisdir"
    rm -f "$redispid"
    cat >"$redisconf" <<EOF
# Written by testbed/services.sh on every start; edits are lost.
bind $host
port $port
protected-mode yes
daemonize yes
supervised no
pidfile $(redis_conf_quote "$redispid")
logfile $(redis_conf_quote "$redislog")
dir $(redis_conf_quote "$redisdir")
save ""
appendonly no
EOF
    if [ -f "$redislog" ]; then log_lines=$(wc -l <"$redislog"); fi
    log "redis: starting on $host:$port"
    redis-server "$redisconf" >>"$redislog" 2>&1 9>&- \
      || { tail -n 20 "$redislog" >&2 || true; die "redis: redis-server failed to start (log: $redislog)"; }
  fi
  local deadline=$((SECONDS + timeout)) seen_pid=0 failed
  until redis_ready "$port"; do
    failed=0
    if redis_pid >/dev/null; then
      seen_pid=1
    elif [ "$seen_pid" = 1 ]; then
      failed=1  # it started, then exited
    elif tail -n +"$((log_lines + 1))" "$redislog" 2>/dev/null | grep -q -e 'aborting' -e 'Fatal'; then
      failed=1  # it exited before writing its pidfile (e.g. port in use)
    fi
    [ "$SECONDS" -lt "$deadline" ] || failed=1
    if [ "$failed" = 1 ]; then
      echo "----- last 20 lines of $redislog -----" >&2
      tail -n 20 "$redislog" >&2 || true
      die "redis: not answering PING on $host:$port after start (log: $redislog)"
    fi
    sleep 0.2
  done
  log "redis: ready on $host:$port"
}

redis_down() {
  local pid port i
  if ! pid=$(redis_pid); then
    log "redis: already stopped"
    rm -f "$redispid"
    return 0
  fi
  port=$(redis_running_port)
  log "redis: stopping"
  redis-cli -h "$host" -p "$port" shutdown nosave >/dev/null 2>&1 || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    [ "$i" = 25 ] && kill -TERM "$pid" 2>/dev/null
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$redispid"
  log "redis: stopped"
}

redis_status() {
  local pid port
  if pid=$(redis_pid); then
    port=$(redis_running_port)
    if redis_ready "$port"; then
      log "redis: running on $host:$port (pid $pid), answering PING"
      return 0
    fi
    log "redis: running (pid $pid) but not answering PING on $host:$port"
    return 1
  fi
  log "redis: stopped"
  return 1
}

# ---------------------------------------------------------------------------------------------

# Serialise concurrent up/down (e.g. parallel test sessions). The daemons are started with fd 9
# closed, or they would hold the lock for their whole life.
lock() {
  exec 9>"$cache/.services.lock"
  flock -w 120 9 || die "another testbed/services.sh is still running (lock $cache/.services.lock)"
}

[ $# -eq 1 ] || usage
set_paths
# The test bed's service ports (PostgreSQL, Redis, the 580xx endpoints, DNS, Prometheus, PgBouncer)
# lie in Linux's ephemeral range (32768-60999): a client socket could take one of them just before a
# server (re)binds it - tests restart PostgreSQL, dnsmasq and Prometheus. Reserve them from automatic
# assignment when this runs as root (CI does); elsewhere say so once and go on.
reserve_ports() {
  local file=/proc/sys/net/ipv4/ip_local_reserved_ports shift=${SAASODOO_PORT_SHIFT:-0} current wanted
  wanted="$pg_port_wanted,$redis_port_wanted,$((58000 + shift))-$((58099 + shift))"
  [ -r "$file" ] || return 0
  current=$(cat "$file")
  if [ -w "$file" ] && printf '%s\n' "${current:+$current,}$wanted" > "$file" 2>/dev/null; then
    [ "$current" = "$(cat "$file")" ] || log "ports: $wanted reserved from ephemeral use (ip_local_reserved_ports)"
  else
    log "ports: could not reserve $wanted from ephemeral use (not root): a rare port clash is possible"
  fi
}

case "$1" in
  up)
    lock
    reserve_ports
    ensure_packages
    pg_up
    redis_up
    ;;
  down)
    lock
    find_pg_bindir || true
    pg_os_user_name
    pg_down
    if have_redis; then redis_down; else log "redis: not installed"; fi
    ;;
  status)
    find_pg_bindir || true
    pg_os_user_name
    rc=0
    pg_status || rc=1
    if have_redis; then redis_status || rc=1; else log "redis: not installed"; rc=1; fi
    exit "$rc"
    ;;
  *) usage ;;
esac
