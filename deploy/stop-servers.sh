#!/usr/bin/env bash
# Stop what deploy/start-servers.sh started: the mlflow server (its whole process group), then PostgreSQL.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: deploy/stop-servers.sh

Stops the mlflow server (pid file in FSSBENCH_RUN_DIR) and PostgreSQL (pg_ctl stop -m fast on
FSSBENCH_PG_DATA). Use the same FSSBENCH_* environment as for deploy/start-servers.sh; see its --help.
Data, artifacts and logs are kept.
EOF
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

die() { echo "stop-servers.sh: $*" >&2; exit 1; }

base="${HOME:-/tmp}/fssbench-servers"
PG_DATA="${FSSBENCH_PG_DATA:-$base/pgdata}"
RUN_DIR="${FSSBENCH_RUN_DIR:-$base/run}"
ML_PID="$RUN_DIR/mlflow.pid"

PG_BIN="${FSSBENCH_PG_BIN:-}"
if [ -z "$PG_BIN" ]; then
  for d in "$(pg_config --bindir 2>/dev/null || true)" $(printf "%s\n" /usr/lib/postgresql/*/bin | sort -rV); do
    if [ -n "$d" ] && [ -x "$d/pg_ctl" ]; then PG_BIN="$d"; break; fi
  done
fi

# -- mlflow server: SIGTERM its process group (setsid made it the leader), SIGKILL after 20 s --------
if [ -f "$ML_PID" ]; then
  pid="$(cat "$ML_PID")"
  if kill -0 "$pid" 2>/dev/null; then
    echo "+ stopping mlflow server (process group $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
      kill -0 -- "-$pid" 2>/dev/null || break
      sleep 1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  else
    echo "+ mlflow server not running (stale pid file)"
  fi
  rm -f "$ML_PID"
else
  echo "+ mlflow server: no pid file in $RUN_DIR"
fi

# -- PostgreSQL -----------------------------------------------------------------------------------------
if [ -f "$PG_DATA/postmaster.pid" ]; then
  [ -n "$PG_BIN" ] || die "pg_ctl not found (set FSSBENCH_PG_BIN)"
  echo "+ pg_ctl stop -m fast ($PG_DATA)"
  "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
else
  echo "+ PostgreSQL not running on $PG_DATA"
fi
