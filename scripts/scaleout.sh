#!/usr/bin/env bash
# Start and stop the scale-out engines the tests and benchmarks use, all on loopback ports:
#
#   pg        a private PostgreSQL primary (5434) and its streaming replica (5433)
#   pgbouncer PgBouncer in transaction mode (6432) in front of the private primary
#   cluster   a Redis Cluster of 3 masters + 3 replicas (7000-7005)
#   sentinel  a Redis master (6380), its replica (6381) and one Sentinel (26379)
#   replica   only the PostgreSQL replica (stop it alone; start brings it back)
#
# Usage: scripts/scaleout.sh start [pg|pgbouncer|cluster|sentinel|all]...
#        scripts/scaleout.sh restore [cluster|sentinel|all]...
#        scripts/scaleout.sh stop [--purge] [pg|pgbouncer|cluster|sentinel|all]...
#        scripts/scaleout.sh status
#
# `start` is idempotent: an engine that is up and healthy is left alone, a broken one is
# rebuilt. It prints the URLs as KEY=VALUE lines. Nothing of the machine's own PostgreSQL or
# Redis (5432 / 6379) is touched. State lives under $SCALEOUT_DIR.
#
# `restore` repairs a Redis topology after a failover test: killed nodes are restarted from
# their own state and rejoin as replicas, then the cluster fails back (CLUSTER FAILOVER) so
# the first three ports are the masters again; a topology it cannot repair is rebuilt.
#
# SCALEOUT_SET=failover selects a second, private set of Redis engines (ports +100, state in
# $SCALEOUT_DIR-failover) for the tests that kill and pause nodes, so they never disturb
# the engines other test sessions share.
set -euo pipefail

BASE=${SCALEOUT_DIR:-${TMPDIR:-/tmp}/underlay-scaleout}
REDIS_SHIFT=0
case ${SCALEOUT_SET:-} in
  "") ;;
  failover) BASE=$BASE-failover REDIS_SHIFT=100 ;;
  *) echo "scaleout: unknown SCALEOUT_SET '$SCALEOUT_SET' (failover)" >&2; exit 1 ;;
esac
PG_PRIMARY_PORT=${SCALEOUT_PG_PRIMARY_PORT:-5434}
PG_REPLICA_PORT=${SCALEOUT_PG_REPLICA_PORT:-5433}
PGBOUNCER_PORT=${SCALEOUT_PGBOUNCER_PORT:-6432}
CLUSTER_PORTS=()
for offset in 0 1 2 3 4 5; do CLUSTER_PORTS+=($((7000 + REDIS_SHIFT + offset))); done
SENTINEL_MASTER_PORT=$((6380 + REDIS_SHIFT))
SENTINEL_REPLICA_PORT=$((6381 + REDIS_SHIFT))
SENTINEL_PORT=$((26379 + REDIS_SHIFT))
PG_OS_USER=postgres

mkdir -p "$BASE"
chmod 0755 "$BASE"

log() { echo "scaleout: $*" >&2; }
die() { log "$*"; exit 1; }

pg_bin() {
  local dir
  if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir
    return
  fi
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return; }
  done
  die "no PostgreSQL server binaries (initdb) found"
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # wait_for <seconds> <command...>
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

with_lock() { # with_lock <name> <command...>: one start/stop per engine at a time (xdist)
  local name=$1; shift
  (
    flock -w 120 9 || die "timed out waiting for the $name lock"
    "$@"
  ) 9>"$BASE/.$name.lock"
}

# -- PostgreSQL primary + replica -----------------------------------------------------------

psql_at() { # psql_at <port> <sql>
  "$(pg_bin)/psql" -X -q -t -A -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2"
}

pg_healthy() {
  port_open "$PG_PRIMARY_PORT" && port_open "$PG_REPLICA_PORT" \
    && [ "$(psql_at "$PG_REPLICA_PORT" 'select pg_is_in_recovery()' 2>/dev/null)" = t ] \
    && [ "$(psql_at "$PG_REPLICA_PORT" "select count(*) from pg_stat_wal_receiver where status = 'streaming'" 2>/dev/null)" = 1 ]
}

pg_ctl_stop() { # pg_ctl_stop <datadir>
  if [ -f "$1/postmaster.pid" ]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$1" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

pg_start_engine() { # pg_start_engine <datadir> <port>
  as_pg "$(pg_bin)/pg_ctl" -D "$1" -l "$1/server.log" -w -t 60 \
    -o "-p $2 -k $BASE/sock" start 9>&- >/dev/null
}

start_pg() {
  if pg_healthy; then return; fi
  if port_open "$PG_PRIMARY_PORT" && [ -f "$BASE/replica/standby.signal" ] \
    && ! port_open "$PG_REPLICA_PORT"; then
    # Only the replica was stopped (a test does that): start it again and let it catch up.
    pg_start_engine "$BASE/replica" "$PG_REPLICA_PORT" \
      && wait_for 30 pg_healthy && return
    log "the replica did not catch up; rebuilding the pair"
  fi
  log "building the private PostgreSQL primary ($PG_PRIMARY_PORT) and replica ($PG_REPLICA_PORT)"
  pg_ctl_stop "$BASE/replica"
  pg_ctl_stop "$BASE/primary"
  rm -rf "$BASE/primary" "$BASE/replica"
  mkdir -p "$BASE/sock" && chown "$PG_OS_USER" "$BASE/sock" "$BASE"
  as_pg "$(pg_bin)/initdb" -D "$BASE/primary" -U postgres --auth=trust -E UTF8 \
    --locale=C.UTF-8 >/dev/null
  cat >>"$BASE/primary/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PRIMARY_PORT
wal_level = replica
max_wal_senders = 10
max_connections = 200
fsync = off
synchronous_commit = on
full_page_writes = off
unix_socket_directories = '$BASE/sock'
CONF
  cat >"$BASE/primary/pg_hba.conf" <<CONF
local all all trust
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
CONF
  pg_start_engine "$BASE/primary" "$PG_PRIMARY_PORT"
  as_pg "$(pg_bin)/pg_basebackup" -h 127.0.0.1 -p "$PG_PRIMARY_PORT" -U postgres \
    -D "$BASE/replica" -R -X stream -c fast >/dev/null
  chmod 0700 "$BASE/replica"
  cat >>"$BASE/replica/postgresql.conf" <<CONF
port = $PG_REPLICA_PORT
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = 1s
CONF
  pg_start_engine "$BASE/replica" "$PG_REPLICA_PORT"
  wait_for 30 pg_healthy || die "the replica did not start streaming (see $BASE/replica/server.log)"
}

start_replica() { start_pg; }

stop_replica() { pg_ctl_stop "$BASE/replica"; }

stop_pg() {
  pg_ctl_stop "$BASE/replica"
  pg_ctl_stop "$BASE/primary"
  if [ "${PURGE:-0}" = 1 ]; then rm -rf "$BASE/primary" "$BASE/replica"; fi
}

# -- PgBouncer ------------------------------------------------------------------------------

pgbouncer_healthy() {
  port_open "$PGBOUNCER_PORT" && psql_at "$PGBOUNCER_PORT" 'select 1' >/dev/null 2>&1
}

start_pgbouncer() {
  command -v pgbouncer >/dev/null || die "pgbouncer is not installed (apt-get install pgbouncer)"
  start_pg
  local dir="$BASE/pgbouncer"
  mkdir -p "$dir" && chown "$PG_OS_USER" "$dir"
  cat >"$dir/pgbouncer.ini" <<CONF
[databases]
* = host=127.0.0.1 port=$PG_PRIMARY_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir = $dir
pidfile = $dir/pgbouncer.pid
logfile = $dir/pgbouncer.log
auth_type = trust
auth_file = $dir/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = 5
max_client_conn = 500
ignore_startup_parameters = extra_float_digits
CONF
  printf '"postgres" ""\n' >"$dir/userlist.txt"
  chown "$PG_OS_USER" "$dir"/*
  if [ -f "$dir/pgbouncer.pid" ] && kill -0 "$(cat "$dir/pgbouncer.pid")" 2>/dev/null; then
    kill -HUP "$(cat "$dir/pgbouncer.pid")"
  else
    port_open "$PGBOUNCER_PORT" && die "port $PGBOUNCER_PORT is taken by another process"
    as_pg pgbouncer -d "$dir/pgbouncer.ini" 9>&- >/dev/null
  fi
  wait_for 15 pgbouncer_healthy || die "PgBouncer did not answer (see $dir/pgbouncer.log)"
}

stop_pgbouncer() {
  local dir="$BASE/pgbouncer" pid
  [ -f "$dir/pgbouncer.pid" ] || return 0
  pid=$(cat "$dir/pgbouncer.pid")
  kill -TERM "$pid" 2>/dev/null || true
  wait_for 5 bash -c "! kill -0 $pid 2>/dev/null" || kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/pgbouncer.pid"
  if [ "${PURGE:-0}" = 1 ]; then rm -rf "$dir"; fi
}

# -- Redis Cluster --------------------------------------------------------------------------

cluster_healthy() {
  local port info
  for port in "${CLUSTER_PORTS[@]}"; do
    info=$(redis-cli -p "$port" cluster info 2>/dev/null) || return 1
    grep -q 'cluster_state:ok' <<<"$info" || return 1
    grep -q 'cluster_known_nodes:6' <<<"$info" || return 1
  done
  # Redis 7 lists a replica only after its first replication ping: wait for all six online.
  [ "$(redis-cli -p "${CLUSTER_PORTS[0]}" cluster shards 2>/dev/null | grep -c '^online$')" = 6 ]
}

redis_kill_range() {
  local port
  for port in "$@"; do
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
}

cluster_node() { # cluster_node <port>: start one node (from its nodes-<port>.conf if any)
  local dir="$BASE/cluster"
  redis-server --port "$1" --bind 127.0.0.1 --protected-mode no --cluster-enabled yes \
    --cluster-config-file "$dir/nodes-$1.conf" --cluster-node-timeout 2000 \
    --save "" --appendonly no --dir "$dir" --repl-diskless-sync-delay 0 \
    --repl-ping-replica-period 1 --daemonize yes --pidfile "$dir/redis-$1.pid" \
    --logfile "$dir/redis-$1.log" 9>&-
}

role_of() { redis-cli -p "$1" role 2>/dev/null | head -n 1; }

is_master() { [ "$(role_of "$1")" = master ]; }

start_cluster() {
  if cluster_healthy; then return; fi
  log "building the Redis Cluster (${CLUSTER_PORTS[0]}-${CLUSTER_PORTS[-1]})"
  redis_kill_range "${CLUSTER_PORTS[@]}"
  local dir="$BASE/cluster" port
  rm -rf "$dir" && mkdir -p "$dir"
  for port in "${CLUSTER_PORTS[@]}"; do cluster_node "$port"; done
  for port in "${CLUSTER_PORTS[@]}"; do
    wait_for 10 port_open "$port" || die "redis $port did not start"
  done
  local nodes=()
  for port in "${CLUSTER_PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
  wait_for 30 cluster_healthy || die "the Redis Cluster did not become healthy"
}

restore_cluster() {
  local dir="$BASE/cluster" port restarted=0
  if [ ! -d "$dir" ]; then start_cluster; return; fi
  for port in "${CLUSTER_PORTS[@]}"; do
    if ! port_open "$port" && [ -f "$dir/nodes-$port.conf" ]; then
      log "restarting cluster node $port"
      cluster_node "$port"
      restarted=1
    fi
  done
  if [ $restarted = 1 ]; then
    for port in "${CLUSTER_PORTS[@]}"; do wait_for 10 port_open "$port" || true; done
  fi
  if ! wait_for 30 cluster_healthy; then
    log "the cluster did not heal; rebuilding it"
    start_cluster
    return
  fi
  # Fail back: the first three ports are the masters, as `start` built them. A manual
  # CLUSTER FAILOVER waits for the replica to catch up, so nothing is lost.
  for port in "${CLUSTER_PORTS[@]:0:3}"; do
    if [ "$(role_of "$port")" = slave ]; then
      log "failing back to $port"
      redis-cli -p "$port" cluster failover >/dev/null
      wait_for 30 is_master "$port" \
        || { log "fail-back to $port failed; rebuilding"; start_cluster; return; }
    fi
  done
  wait_for 30 cluster_healthy || { log "not healthy after fail-back; rebuilding"; start_cluster; }
}

stop_cluster() {
  redis_kill_range "${CLUSTER_PORTS[@]}"
  if [ "${PURGE:-0}" = 1 ]; then rm -rf "$BASE/cluster"; fi
}

# -- Redis Sentinel -------------------------------------------------------------------------

sentinel_healthy() {
  local port
  port=$(sentinel_master_port) || return 1
  [ -n "$port" ] || return 1
  is_master "$port" \
    && [ "$(redis-cli -p "$port" info replication | grep -c '^slave[0-9]*:.*state=online')" -ge 1 ]
}

sentinel_node() { # sentinel_node <port> [<master port>]: one data node of the Sentinel set-up
  local dir="$BASE/sentinel" follow=()
  [ -z "${2:-}" ] || follow=(--replicaof 127.0.0.1 "$2")
  redis-server --port "$1" --bind 127.0.0.1 --protected-mode no --save "" --appendonly no \
    --dir "$dir" --repl-diskless-sync-delay 0 --repl-ping-replica-period 1 --daemonize yes \
    "${follow[@]}" --pidfile "$dir/redis-$1.pid" --logfile "$dir/redis-$1.log" 9>&-
}

sentinel_master_port() {
  redis-cli -p "$SENTINEL_PORT" sentinel get-master-addr-by-name mymaster 2>/dev/null \
    | sed -n 2p
}

sentinel_master_up() {
  local port
  port=$(sentinel_master_port) && [ -n "$port" ] && is_master "$port"
}

start_sentinel() {
  if sentinel_healthy; then return; fi
  log "building the Sentinel set-up ($SENTINEL_MASTER_PORT, $SENTINEL_REPLICA_PORT, $SENTINEL_PORT)"
  redis_kill_range "$SENTINEL_PORT" "$SENTINEL_MASTER_PORT" "$SENTINEL_REPLICA_PORT"
  local dir="$BASE/sentinel"
  rm -rf "$dir" && mkdir -p "$dir"
  sentinel_node "$SENTINEL_MASTER_PORT"
  sentinel_node "$SENTINEL_REPLICA_PORT" "$SENTINEL_MASTER_PORT"
  cat >"$dir/sentinel.conf" <<CONF
port $SENTINEL_PORT
bind 127.0.0.1
protected-mode no
daemonize yes
pidfile $dir/sentinel.pid
logfile $dir/sentinel.log
dir $dir
sentinel monitor mymaster 127.0.0.1 $SENTINEL_MASTER_PORT 1
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 10000
sentinel parallel-syncs mymaster 1
CONF
  redis-server "$dir/sentinel.conf" --sentinel 9>&-
  wait_for 30 sentinel_healthy || die "the Sentinel set-up did not become healthy"
}

restore_sentinel() {
  local dir="$BASE/sentinel" master port
  if [ ! -f "$dir/sentinel.conf" ] || ! port_open "$SENTINEL_PORT"; then start_sentinel; return; fi
  # A failover may still be under way: wait until Sentinel names a master that answers.
  wait_for 30 sentinel_master_up || true
  master=$(sentinel_master_port)
  if [ -n "$master" ] && port_open "$master"; then
    for port in "$SENTINEL_MASTER_PORT" "$SENTINEL_REPLICA_PORT"; do
      if [ "$port" != "$master" ] && ! port_open "$port"; then
        log "restarting $port as a replica of $master"
        sentinel_node "$port" "$master"
      fi
    done
  fi
  wait_for 30 sentinel_healthy || { log "the Sentinel set-up did not heal; rebuilding"; start_sentinel; }
}

stop_sentinel() {
  redis_kill_range "$SENTINEL_PORT" "$SENTINEL_MASTER_PORT" "$SENTINEL_REPLICA_PORT"
  if [ "${PURGE:-0}" = 1 ]; then rm -rf "$BASE/sentinel"; fi
}

# -- commands -------------------------------------------------------------------------------

print_urls() {
  local engine
  for engine in "$@"; do
    case $engine in
      pg | replica)
        echo "SCALEOUT_PRIMARY_URL=postgresql+asyncpg://postgres@127.0.0.1:$PG_PRIMARY_PORT/postgres"
        echo "SCALEOUT_REPLICA_URL=postgresql+asyncpg://postgres@127.0.0.1:$PG_REPLICA_PORT/postgres"
        ;;
      pgbouncer)
        echo "SCALEOUT_PGBOUNCER_URL=postgresql+asyncpg://postgres@127.0.0.1:$PGBOUNCER_PORT/postgres"
        ;;
      cluster)
        echo "SCALEOUT_CLUSTER_NODES=$(printf '127.0.0.1:%s,' "${CLUSTER_PORTS[@]}" | sed 's/,$//')"
        ;;
      sentinel)
        echo "SCALEOUT_SENTINELS=127.0.0.1:$SENTINEL_PORT"
        echo "SCALEOUT_SENTINEL_SERVICE=mymaster"
        ;;
    esac
  done
}

engines() { # expand "all" and check names
  local out=() name
  [ $# -gt 0 ] || set -- all
  for name in "$@"; do
    case $name in
      all) out+=(pg pgbouncer cluster sentinel) ;;
      pg | pgbouncer | cluster | sentinel | replica) out+=("$name") ;;
      *) die "unknown engine '$name' (pg, replica, pgbouncer, cluster, sentinel, all)" ;;
    esac
  done
  echo "${out[@]}"
}

command=${1:-}
shift || true
case $command in
  start)
    read -r -a todo <<<"$(engines "$@")"
    for engine in "${todo[@]}"; do with_lock "$engine" "start_$engine"; done
    print_urls "${todo[@]}"
    ;;
  stop)
    PURGE=0
    if [ "${1:-}" = --purge ]; then PURGE=1; shift; fi
    export PURGE
    read -r -a todo <<<"$(engines "$@")"
    # PgBouncer first: it holds connections to the primary.
    for engine in pgbouncer sentinel cluster replica pg; do
      if [[ " ${todo[*]} " == *" $engine "* ]]; then with_lock "$engine" "stop_$engine"; fi
    done
    ;;
  restore)
    [ $# -gt 0 ] || set -- cluster sentinel
    for engine in "$@"; do
      case $engine in
        all) with_lock cluster restore_cluster; with_lock sentinel restore_sentinel ;;
        cluster | sentinel) with_lock "$engine" "restore_$engine" ;;
        *) die "restore knows cluster, sentinel and all, not '$engine'" ;;
      esac
    done
    read -r -a todo <<<"$(engines "$@")"
    print_urls "${todo[@]}"
    ;;
  status)
    for engine in pg pgbouncer cluster sentinel; do
      if "${engine}_healthy"; then echo "$engine: up"; else echo "$engine: down"; fi
    done
    ;;
  *)
    sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
