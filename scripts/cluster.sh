#!/usr/bin/env bash
# The local PostgreSQL 15 cluster for `make run`, `make test` and `make bench`.
#
# PostgreSQL refuses to run as root, so the cluster belongs to the postgres
# user and lives in .cluster/<name>/ (ignored by git), on its own port and
# socket directory, so it never meets a system cluster. SMSBUS_CLUSTER picks
# the cluster: "dev" (make run, port 54315), "test" (make test, port 54316)
# or "bench" (make bench, port 54317), so none disturbs another.
#
#   scripts/cluster.sh start|stop|status|template|createdb NAME|env
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
NAME=${SMSBUS_CLUSTER:-dev}
case "$NAME" in
    dev) DEFAULT_PORT=54315 ;;
    test) DEFAULT_PORT=54316 ;;
    *) DEFAULT_PORT=54317 ;;
esac
DIR=$ROOT/.cluster/$NAME
DATA=$DIR/data
RUN=$DIR/run
LOG=$DIR/postgresql.log
PORT=${SMSBUS_PGPORT:-$DEFAULT_PORT}
TEMPLATE=smsbus_template

as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

psql_admin() {
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -U postgres "$@"
}

init() {
    [ -f "$DATA/PG_VERSION" ] && return
    mkdir -p "$DIR" "$RUN"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$DIR" "$RUN"; fi
    chmod 755 "$ROOT/.cluster"
    as_postgres "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$DATA/postgresql.conf" <<CONF
# smsbus local cluster
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$RUN'
max_connections = 300
shared_buffers = 512MB
max_wal_size = 4GB
log_min_messages = warning
log_min_error_statement = panic
CONF
}

start() {
    init
    if as_postgres "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then return; fi
    as_postgres "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null
}

stop() {
    [ -f "$DATA/PG_VERSION" ] || return 0
    if as_postgres "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
        as_postgres "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
    fi
}

# A template database with the freshly installed extension: every test
# database is a copy of it.
template() {
    psql_admin -d postgres <<SQL
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$TEMPLATE';
UPDATE pg_database SET datistemplate = false WHERE datname = '$TEMPLATE';
DROP DATABASE IF EXISTS $TEMPLATE;
CREATE DATABASE $TEMPLATE;
\c $TEMPLATE
CREATE EXTENSION smsbus;
\c postgres
ALTER DATABASE $TEMPLATE IS_TEMPLATE true;
SQL
}

createdb() {
    local name=$1
    psql_admin -d postgres <<SQL
SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$name';
DROP DATABASE IF EXISTS "$name";
CREATE DATABASE "$name" TEMPLATE $TEMPLATE;
SQL
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) as_postgres "$PGBIN/pg_ctl" -D "$DATA" status ;;
    template) template ;;
    createdb) createdb "$2" ;;
    env) echo "host=$RUN port=$PORT user=postgres" ;;
    *) echo "usage: $0 start|stop|status|template|createdb NAME|env" >&2; exit 2 ;;
esac
