#!/usr/bin/env bash
# Start PostgreSQL and an MLflow tracking server on this host, for fssbench runs and Optuna searches.
# Run it as the (non-root) user who will own the data. Idempotent: what already runs is left running.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: FSSBENCH_PG_PASSWORD=... deploy/start-servers.sh

Starts, as the invoking non-root user:
  1. PostgreSQL on FSSBENCH_PG_DATA (initdb first when the folder is missing or empty), with the
     role FSSBENCH_PG_USER (password FSSBENCH_PG_PASSWORD) owning the databases "mlflow" and "optuna";
  2. mlflow server, backed by the "mlflow" database, artifacts proxied into FSSBENCH_ARTIFACTS.
Both run in the background; pid files and logs go to FSSBENCH_RUN_DIR. Stop them with
deploy/stop-servers.sh (same environment). Prints the two URIs to export at the end.

Environment (default):
  FSSBENCH_PG_PASSWORD     password of the database role                     (required)
  FSSBENCH_PG_DATA         PostgreSQL data folder                            ($HOME/fssbench-servers/pgdata)
  FSSBENCH_PG_HOST         address PostgreSQL listens on ('*' = all)         (127.0.0.1)
  FSSBENCH_PG_PORT         PostgreSQL port                                   (5432)
  FSSBENCH_PG_USER         database role for MLflow and Optuna               (fssbench)
  FSSBENCH_PG_ALLOW        client network allowed besides loopback, a CIDR or 'samenet'
                           (samenet when FSSBENCH_PG_HOST is not loopback, else none)
  FSSBENCH_PG_BIN          folder with initdb/pg_ctl/psql                    (pg_config --bindir, /usr/lib/postgresql/*/bin)
  FSSBENCH_MLFLOW_HOST     address mlflow server binds                       (127.0.0.1)
  FSSBENCH_MLFLOW_PORT     mlflow server port                                (5000)
  FSSBENCH_MLFLOW_WORKERS  uvicorn worker processes                          (2)
  FSSBENCH_MLFLOW_ALLOWED_HOSTS  --allowed-hosts (Host headers accepted)     (mlflow's: localhost, private IPs)
  FSSBENCH_MLFLOW          mlflow command                                    (mlflow)
  FSSBENCH_ARTIFACTS       artifact folder                                   ($HOME/fssbench-servers/mlartifacts)
  FSSBENCH_RUN_DIR         pid files, logs, PostgreSQL's unix socket         ($HOME/fssbench-servers/run)
  FSSBENCH_PUBLIC_HOST     host name put in the printed URIs                 (the listen address, or hostname -f)
EOF
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

die() { echo "start-servers.sh: $*" >&2; exit 1; }

[ "$(id -u)" != 0 ] || die "do not run as root (PostgreSQL refuses to); run as the user who owns the data"
[ -n "${FSSBENCH_PG_PASSWORD:-}" ] || { usage >&2; die "FSSBENCH_PG_PASSWORD is not set"; }

base="${HOME:-/tmp}/fssbench-servers"
PG_DATA="${FSSBENCH_PG_DATA:-$base/pgdata}"
PG_HOST="${FSSBENCH_PG_HOST:-127.0.0.1}"
PG_PORT="${FSSBENCH_PG_PORT:-5432}"
PG_USER="${FSSBENCH_PG_USER:-fssbench}"
PG_PASSWORD="$FSSBENCH_PG_PASSWORD"
ML_HOST="${FSSBENCH_MLFLOW_HOST:-127.0.0.1}"
ML_PORT="${FSSBENCH_MLFLOW_PORT:-5000}"
ML_WORKERS="${FSSBENCH_MLFLOW_WORKERS:-2}"
MLFLOW="${FSSBENCH_MLFLOW:-mlflow}"
ARTIFACTS="${FSSBENCH_ARTIFACTS:-$base/mlartifacts}"
RUN_DIR="${FSSBENCH_RUN_DIR:-$base/run}"

[[ "$PG_USER" =~ ^[a-z_][a-z0-9_]*$ ]] || die "FSSBENCH_PG_USER must match [a-z_][a-z0-9_]* (got '$PG_USER')"
[[ "$PG_PORT" =~ ^[0-9]+$ && "$ML_PORT" =~ ^[0-9]+$ ]] || die "ports must be numbers"

is_loopback() { [[ "$1" == 127.* || "$1" == localhost || "$1" == ::1 ]]; }
if [ -n "${FSSBENCH_PUBLIC_HOST:-}" ]; then
  PUBLIC_HOST="$FSSBENCH_PUBLIC_HOST"
elif is_loopback "$ML_HOST" && is_loopback "$PG_HOST"; then
  PUBLIC_HOST=127.0.0.1
else
  PUBLIC_HOST="$(hostname -f 2>/dev/null || hostname)"
fi
PG_ALLOW="${FSSBENCH_PG_ALLOW:-}"
if [ -z "$PG_ALLOW" ] && ! is_loopback "$PG_HOST"; then PG_ALLOW=samenet; fi

# -- PostgreSQL binaries ------------------------------------------------------------------------------
PG_BIN="${FSSBENCH_PG_BIN:-}"
if [ -z "$PG_BIN" ]; then
  for d in "$(pg_config --bindir 2>/dev/null || true)" $(printf "%s\n" /usr/lib/postgresql/*/bin | sort -rV); do
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then PG_BIN="$d"; break; fi
  done
fi
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/pg_ctl" ] \
  || die "PostgreSQL server binaries not found (Debian: apt-get install postgresql; or set FSSBENCH_PG_BIN)"
command -v "$MLFLOW" >/dev/null 2>&1 || die "'$MLFLOW' not found (activate the fssbench venv or set FSSBENCH_MLFLOW)"

mkdir -p "$RUN_DIR" "$ARTIFACTS"
chmod 700 "$RUN_DIR"
PG_LOG="$RUN_DIR/postgres.log"
ML_LOG="$RUN_DIR/mlflow.log"
ML_PID="$RUN_DIR/mlflow.pid"

# psql as the cluster's superuser (the invoking OS user, peer auth) over the private unix socket.
psql_admin() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN_DIR" -p "$PG_PORT" -U "$(id -un)" -d postgres; }
# A single-quoted SQL (and postgresql.conf) literal: quotes doubled.
sql_literal() { printf "'%s'" "${1//\'/\'\'}"; }

# -- 1. PostgreSQL --------------------------------------------------------------------------------------
if [ ! -d "$PG_DATA" ] || [ -z "$(ls -A "$PG_DATA")" ]; then
  echo "+ initdb $PG_DATA"
  mkdir -p "$PG_DATA"
  chmod 700 "$PG_DATA"
  LC_ALL=C "$PG_BIN/initdb" -D "$PG_DATA" -U "$(id -un)" --encoding=UTF8 --locale=C \
    --auth-local=peer --auth-host=scram-sha-256 >"$RUN_DIR/initdb.log" \
    || die "initdb failed, see $RUN_DIR/initdb.log"
  echo "include_if_exists = 'fssbench.conf'   # written by deploy/start-servers.sh" >>"$PG_DATA/postgresql.conf"
fi
[ -f "$PG_DATA/PG_VERSION" ] || die "$PG_DATA is not empty and is not a PostgreSQL data folder"

# Settings that follow the environment, rewritten at each start (quoted: paths may hold spaces).
{
  echo "# written by deploy/start-servers.sh at each start; edit the environment, not this file"
  echo "listen_addresses = $(sql_literal "$PG_HOST")"
  echo "port = $PG_PORT"
  echo "unix_socket_directories = $(sql_literal "$RUN_DIR")"
  echo "password_encryption = 'scram-sha-256'"
} >"$PG_DATA/fssbench.conf"
if [ -n "$PG_ALLOW" ] && ! grep -q "^host all all $PG_ALLOW scram-sha-256" "$PG_DATA/pg_hba.conf"; then
  echo "host all all $PG_ALLOW scram-sha-256" >>"$PG_DATA/pg_hba.conf"
fi

if "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
  echo "+ PostgreSQL already running on $PG_DATA (reloading its configuration)"
  "$PG_BIN/pg_ctl" -D "$PG_DATA" reload >/dev/null
else
  echo "+ pg_ctl start (log: $PG_LOG)"
  "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null \
    || { tail -n 20 "$PG_LOG" >&2; die "PostgreSQL did not start, see $PG_LOG"; }
fi

# The role (password set again at each start, so changing FSSBENCH_PG_PASSWORD takes effect) and the
# two databases. The password goes through stdin, never on a command line.
{
  echo "SELECT format('CREATE ROLE %I LOGIN', $(sql_literal "$PG_USER"))"
  echo "  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = $(sql_literal "$PG_USER")) \\gexec"
  echo "ALTER ROLE \"$PG_USER\" WITH LOGIN PASSWORD $(sql_literal "$PG_PASSWORD");"
  for db in mlflow optuna; do
    echo "SELECT format('CREATE DATABASE %I OWNER %I', '$db', $(sql_literal "$PG_USER"))"
    echo "  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db') \\gexec"
  done
} | psql_admin >/dev/null

urlquote() { python3 -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["V"], safe=""))'; }
PW_Q="$(V="$PG_PASSWORD" urlquote)"
# For the clients: the host they reach PostgreSQL by. For mlflow server (same host): loopback when it listens there.
PG_CLIENT_HOST="$PUBLIC_HOST"
if is_loopback "$PG_HOST"; then PG_CLIENT_HOST=127.0.0.1; fi
# "+psycopg2" on purpose: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed.
MLFLOW_DB_URI="postgresql+psycopg2://$PG_USER:$PW_Q@$PG_CLIENT_HOST:$PG_PORT/mlflow"
OPTUNA_URI="postgresql+psycopg2://$PG_USER:$PW_Q@$PG_CLIENT_HOST:$PG_PORT/optuna"

# -- 2. mlflow server -----------------------------------------------------------------------------------
if [ -f "$ML_PID" ] && kill -0 "$(cat "$ML_PID")" 2>/dev/null; then
  echo "+ mlflow server already running (pid $(cat "$ML_PID"))"
else
  echo "+ mlflow server on $ML_HOST:$ML_PORT (log: $ML_LOG)"
  extra=()
  if [ -n "${FSSBENCH_MLFLOW_ALLOWED_HOSTS:-}" ]; then extra+=(--allowed-hosts "$FSSBENCH_MLFLOW_ALLOWED_HOSTS"); fi
  # The store URI (it holds the password) goes through the environment, not the command line. setsid:
  # its own process group, so stop-servers.sh stops the uvicorn workers with it.
  MLFLOW_BACKEND_STORE_URI="$MLFLOW_DB_URI" MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
    nohup setsid "$MLFLOW" server --host "$ML_HOST" --port "$ML_PORT" --workers "$ML_WORKERS" \
    --artifacts-destination "$ARTIFACTS" "${extra[@]}" </dev/null >>"$ML_LOG" 2>&1 &
  echo $! >"$ML_PID"
  probe_host="$ML_HOST"
  if [ "$probe_host" = 0.0.0.0 ] || [ "$probe_host" = "*" ]; then probe_host=127.0.0.1; fi
  ok=0
  for _ in $(seq 1 120); do
    if ! kill -0 "$(cat "$ML_PID")" 2>/dev/null; then break; fi
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "http://$probe_host:$ML_PORT/health" 2>/dev/null; then ok=1; break; fi
    sleep 1
  done
  if [ "$ok" != 1 ]; then
    tail -n 30 "$ML_LOG" >&2
    die "mlflow server did not answer /health on $probe_host:$ML_PORT, see $ML_LOG (stop the rest with deploy/stop-servers.sh)"
  fi
fi

cat <<EOF

PostgreSQL (data $PG_DATA) and mlflow server (artifacts $ARTIFACTS) are running; logs in $RUN_DIR.
Export these where fssbench runs:

  export MLFLOW_TRACKING_URI=http://$PUBLIC_HOST:$ML_PORT
  export FSSBENCH_OPTUNA_STORAGE='$OPTUNA_URI'   # fssbench search ... --storage "\$FSSBENCH_OPTUNA_STORAGE"
EOF
