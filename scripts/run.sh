#!/usr/bin/env bash
# Run the whole platform in the foreground (what `make run` does):
#   - starts a local redis-server on 127.0.0.1 unless REDIS_URL is set,
#   - makes sure an admin token exists (<state dir>/admin-token),
#   - runs the processes of the Procfile under supervisord: the configuration is exported from
#     the Procfile by honcho with berth's template (scripts/supervisor/supervisord.conf), so a
#     process that exits is restarted with backoff and logged, and no process's exit stops
#     another. Each process logs to <state dir>/logs/<name>.log; supervisord's own lines
#     (spawned, exited, restarted) come to the terminal.
# Ctrl-C (or SIGTERM) stops supervisord, which stops every process group it started, then
# the redis-server started here; the exit status is then 0.
#
# Environment:
#   REDIS_URL                use this Redis instead of starting one
#   BERTH_LOCAL_REDIS_PORT   port of the local redis-server (default 6390)
#   BERTH_WEB_PORT, BERTH_HTTP_PORT, BERTH_HTTPS_PORT   listeners, shown in the URLs printed
#   BERTH_PROCFILE           Procfile to run (default: Procfile)
#   BERTH_PROCESSES          comma-separated Procfile names to run on this host (default: all)
#   BERTH_STATE_DIR          where Redis data, the admin token, logs and supervisord's files
#                            live (default: .berth in the checkout)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV_BIN="$ROOT/.venv/bin"
PROCFILE="${BERTH_PROCFILE:-Procfile}"
STATE_DIR="${BERTH_STATE_DIR:-.berth}"

log() { printf 'run: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# Finds a binary on PATH or in the system directories a non-root PATH may lack.
find_bin() {
  local dir
  if command -v "$1" 2>/dev/null; then return 0; fi
  for dir in /usr/local/bin /usr/bin /usr/sbin /bin /sbin; do
    if [ -x "$dir/$1" ]; then
      echo "$dir/$1"
      return 0
    fi
  done
  return 1
}

# True while the process exists and is not a zombie waiting to be reaped.
alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [ "${stat:0:1}" != "Z" ]
}

# stop PID NAME SECONDS: SIGTERM, wait up to SECONDS, then SIGKILL. Only our own children.
stop() {
  local pid=$1 name=$2 seconds=$3 i
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < seconds * 10; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      log "$name (pid $pid) still running after ${seconds}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || true
}

redis_pid=""
supervisord_pid=""
cleaned_up=0

cleanup() {
  if [ "$cleaned_up" = 1 ]; then return 0; fi
  cleaned_up=1
  # A second Ctrl-C must not cut the shutdown short and leave redis running.
  trap '' INT TERM
  if [ -n "$supervisord_pid" ]; then
    # supervisord sends SIGTERM to every process group it started and SIGKILL to a group
    # still there after stopwaitsecs (15 s).
    stop "$supervisord_pid" supervisord 40
  fi
  if [ -n "$redis_pid" ]; then
    log "stopping redis-server (pid $redis_pid)"
    stop "$redis_pid" redis-server 10
  fi
}

# Ctrl-C or SIGTERM is how the platform is meant to be stopped: a clean stop exits 0.
on_signal() {
  log "$1 received; stopping"
  cleanup
  trap - EXIT
  exit 0
}

trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap cleanup EXIT

[ -x "$VENV_BIN/python" ] || die ".venv is missing; run 'make bootstrap' first"
[ -f "$PROCFILE" ] || die "no Procfile at '$PROCFILE'"

export PATH="$VENV_BIN:$PATH"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

mkdir -p "$STATE_DIR"
chmod 700 "$STATE_DIR"
STATE_DIR="$(cd "$STATE_DIR" && pwd)"
TOKEN_PATH="$STATE_DIR/admin-token"
SUPERVISOR_DIR="$STATE_DIR/supervisor"
SUPERVISOR_CONF="$SUPERVISOR_DIR/berth.conf"
LOG_DIR="$STATE_DIR/logs"
# The TLS proxy's certificate files live with the rest of this run's state.
export BERTH_TLS_DIR="${BERTH_TLS_DIR:-$STATE_DIR/tls}"

# The Procfile's process names, and those this host runs (BERTH_PROCESSES, default all).
mapfile -t all_processes < <(sed -nE 's/^([A-Za-z0-9_-]+):.*/\1/p' "$PROCFILE")
selected=()
if [ -n "${BERTH_PROCESSES:-}" ]; then
  IFS=',' read -ra wanted <<<"$BERTH_PROCESSES"
  for name in "${wanted[@]}"; do
    name="${name// /}"
    [ -n "$name" ] || continue
    printf '%s\n' "${all_processes[@]}" | grep -qxF -- "$name" ||
      die "BERTH_PROCESSES names '$name', which is not in $PROCFILE (${all_processes[*]})"
    selected+=("$name")
  done
  [ "${#selected[@]}" -gt 0 ] || die "BERTH_PROCESSES is set but names no process"
else
  selected=("${all_processes[@]}")
fi
has_process() { printf '%s\n' "${selected[@]}" | grep -qxF -- "$1"; }

# honcho's exporter runs N copies of a process with -c NAME=N; 0 leaves it out.
skipped=()
for name in "${all_processes[@]}"; do
  has_process "$name" || skipped+=("$name=0")
done
concurrency="$(IFS=','; echo "${skipped[*]}")"

redis_note=""
if [ -z "${REDIS_URL:-}" ]; then
  port="${BERTH_LOCAL_REDIS_PORT:-6390}"
  if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    die "BERTH_LOCAL_REDIS_PORT must be a TCP port (1-65535), got '$port'"
  fi
  redis_server="$(find_bin redis-server)" || die "redis-server not found; run 'make bootstrap'"
  redis_cli="$(find_bin redis-cli)" || die "redis-cli not found; run 'make bootstrap'"

  if "$redis_cli" -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
    die "a Redis already answers on 127.0.0.1:$port (one left from an earlier run? see $STATE_DIR/redis.pid);" \
      "stop it, or set BERTH_LOCAL_REDIS_PORT to another port, or REDIS_URL to use it"
  fi

  mkdir -p "$STATE_DIR/redis"
  # Job control gives redis-server its own process group: a Ctrl-C in the terminal then
  # reaches this script (and supervisord), not Redis, which is stopped last, after the processes
  # that use it have finished.
  set -m
  "$redis_server" \
    --bind 127.0.0.1 \
    --port "$port" \
    --dir "$STATE_DIR/redis" \
    --daemonize no \
    --save 60 1 \
    --appendonly yes \
    --pidfile "$STATE_DIR/redis.pid" \
    --logfile "$STATE_DIR/redis.log" \
    </dev/null &
  redis_pid=$!
  set +m

  deadline=$((SECONDS + 10))
  until "$redis_cli" -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; do
    if ! alive "$redis_pid"; then
      tail -n 20 "$STATE_DIR/redis.log" >&2 2>/dev/null || true
      die "redis-server exited during start-up; see $STATE_DIR/redis.log"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 20 "$STATE_DIR/redis.log" >&2 2>/dev/null || true
      die "redis-server did not answer PING on 127.0.0.1:$port within 10 s; see $STATE_DIR/redis.log"
    fi
    sleep 0.1
  done
  export REDIS_URL="redis://127.0.0.1:$port/0"
  redis_note="$REDIS_URL (pid $redis_pid, data in $STATE_DIR/redis/, log $STATE_DIR/redis.log)"
else
  redis_note="from REDIS_URL"
fi

# Services need a container engine; say once, with the fix, when none answers.
engine="${DOCKER_HOST:-unix:///var/run/docker.sock}"
if "$VENV_BIN/python" -c 'import sys, docker; docker.DockerClient(base_url=sys.argv[1], timeout=3).ping()' \
  "$engine" >/dev/null 2>&1; then
  engine_note="$engine"
else
  engine_note="none answers at $engine: 'berth services' will fail until one does; start one with"
  engine_note+=" 'sudo systemctl start docker' (Debian: apt-get install docker.io), or set DOCKER_HOST"
fi

# Creates the admin token on first run and prints it once; later runs print no secret.
"$VENV_BIN/python" -m app.admin ensure-token --path "$TOKEN_PATH"

if [ -f "$SUPERVISOR_DIR/supervisord.pid" ] && alive "$(cat "$SUPERVISOR_DIR/supervisord.pid")"; then
  die "a supervisord of this state directory runs already (pid $(cat "$SUPERVISOR_DIR/supervisord.pid"));" \
    "stop it, or set BERTH_STATE_DIR to another directory"
fi
mkdir -p "$SUPERVISOR_DIR" "$LOG_DIR"
if ! export_out="$("$VENV_BIN/honcho" export -f "$PROCFILE" -d "$ROOT" -a berth -s /bin/bash -u "$(id -un)" \
  -t "$ROOT/scripts/supervisor" -l "$LOG_DIR" ${concurrency:+-c "$concurrency"} \
  supervisord "$SUPERVISOR_DIR" 2>&1)"; then
  printf '%s\n' "$export_out" >&2
  die "could not export $PROCFILE to a supervisord configuration"
fi
ctl="$VENV_BIN/supervisorctl -c $SUPERVISOR_CONF"

echo
echo "berth (${selected[*]}):"
if has_process web; then
  echo "  dashboard  http://127.0.0.1:${BERTH_WEB_PORT:-8000}/dashboard"
  echo "  web/API    http://127.0.0.1:${BERTH_WEB_PORT:-8000}"
fi
if has_process proxy; then
  echo "  proxy      http://127.0.0.1:${BERTH_HTTP_PORT:-8080}"
fi
if has_process proxy-tls; then
  echo "  proxy TLS  https://127.0.0.1:${BERTH_HTTPS_PORT:-8443}"
fi
echo "  redis      $redis_note"
echo "  engine     $engine_note"
echo "  CLI        BERTH_TOKEN=\$(cat $TOKEN_PATH) ./berth status"
echo "  processes  $ctl status"
echo "  logs       $LOG_DIR/<process>.log (tail -F $LOG_DIR/*.log)"
echo "  stop       Ctrl-C"
echo

"$VENV_BIN/supervisord" -c "$SUPERVISOR_CONF" &
supervisord_pid=$!

# `wait` (unlike a foreground command) returns as soon as a trapped signal arrives.
rc=0
wait "$supervisord_pid" || rc=$?
supervisord_pid=""
log "supervisord exited with status $rc"
exit "$rc"
