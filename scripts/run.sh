#!/usr/bin/env bash
# Run the whole platform in the foreground (what `make run` does):
#   - starts a local redis-server on 127.0.0.1 unless REDIS_URL is set,
#   - uses the container engine at DOCKER_HOST, else the default socket; when neither is set
#     nor answers, starts a private dockerd as root (<state dir>/engine, see
#     start_private_engine), and otherwise says once how to get one,
#   - makes sure an admin token exists (<state dir>/admin-token),
#   - runs the processes of the Procfile under supervisord: the configuration is exported from
#     the Procfile by honcho with berth's template (scripts/supervisor/supervisord.conf), so a
#     process that exits is restarted with backoff and logged, and no process's exit stops
#     another. supervisord listens on the proxies' ports itself and keeps the sockets while it
#     runs, so a proxy restarting never refuses a connection. Each process logs to
#     <state dir>/logs/<name>.log; supervisord's own lines (spawned, exited, restarted) come
#     to the terminal.
# Ctrl-C (or SIGTERM) stops supervisord, which stops every process group it started, then
# the private dockerd and the redis-server started here; the exit status is then 0.
#
# Environment:
#   REDIS_URL                use this Redis instead of starting one
#   DOCKER_HOST              use this container engine (never starts a private one)
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
dockerd_pid=""
engine_bridge=""
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
  if [ -n "$dockerd_pid" ]; then
    # dockerd stops its containers (each gets its stop timeout, 10 s) and its containerd.
    log "stopping the private dockerd (pid $dockerd_pid)"
    stop "$dockerd_pid" dockerd 60
  fi
  if [ -n "$engine_bridge" ]; then
    "$VENV_BIN/python" -m app.bridge delete "$engine_bridge" 2>/dev/null || true
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

# Services need a container engine. DOCKER_HOST names one to use as it is. Without it, the
# default socket; when nothing answers there and this runs as root with dockerd installed, a
# private engine is started below. Otherwise run.sh says once how to get one.
DEFAULT_ENGINE="unix:///var/run/docker.sock"
engine_answers() {
  "$VENV_BIN/python" -c 'import sys, docker; docker.DockerClient(base_url=sys.argv[1], timeout=3).ping()' \
    "$1" >/dev/null 2>&1
}

# A private dockerd, started as the test harness starts one (harness/docker.py): its data,
# exec root, socket, pid file and configuration under <state dir>/engine (its own
# daemon.json, so /etc/docker/daemon.json changes nothing), and its own Linux bridge on a
# free 10.214.x.0/24 (app/bridge.py; test engines take 10.213.x), so it never shares docker0,
# a subnet or a socket with another daemon. No iptables rules, IP forwarding or masquerading:
# containers reach nothing beyond this machine, and published ports (berth publishes on
# 127.0.0.1) are served by docker-proxy. Stopped by its PID after supervisord.
start_private_engine() {
  local dockerd=$1 engine_dir="$STATE_DIR/engine"
  local exec_root="$engine_dir/exec" pidfile="$engine_dir/docker.pid" driver="" deadline
  engine_log="$engine_dir/dockerd.log"
  # containerd's sockets live under the exec root, and a unix socket path has at most 107
  # bytes: <exec root>/containerd/containerd.sock.ttrpc is the longest.
  if ((${#exec_root} + 33 > 107)); then
    die "the state directory's path ($STATE_DIR) is too long for the private engine's sockets;" \
      "set BERTH_STATE_DIR to a path of at most 62 characters, or DOCKER_HOST to an engine"
  fi
  if [ -f "$pidfile" ] && alive "$(cat "$pidfile")"; then
    die "a dockerd of this state directory runs already (pid $(cat "$pidfile"), a leftover" \
      "from an earlier run?); stop it, or set BERTH_STATE_DIR to another directory"
  fi
  mkdir -p "$engine_dir"
  chmod 700 "$engine_dir"
  echo '{}' >"$engine_dir/daemon.json"
  # Named after the state directory: a run that was SIGKILLed leaves at most this one
  # behind, and the next run replaces it.
  engine_bridge="brb$(printf '%s' "$STATE_DIR" | sha256sum | cut -c1-8)"
  "$VENV_BIN/python" -m app.bridge delete "$engine_bridge"
  engine_bip="$("$VENV_BIN/python" -m app.bridge create "$engine_bridge" 10.214)" ||
    die "could not create the private engine's bridge $engine_bridge"
  engine_url="unix://$engine_dir/docker.sock"
  while true; do
    # Its own process group, like redis-server's: Ctrl-C reaches this script, not dockerd,
    # which stops (and stops its containers) after the processes that use it.
    set -m
    "$dockerd" --host "$engine_url" \
      --data-root "$engine_dir/data" --exec-root "$exec_root" --pidfile "$pidfile" \
      --config-file "$engine_dir/daemon.json" \
      --bridge "$engine_bridge" --iptables=false --ip6tables=false \
      --ip-forward=false --ip-masq=false --userland-proxy=true \
      ${driver:+--storage-driver "$driver"} \
      </dev/null >>"$engine_log" 2>&1 &
    dockerd_pid=$!
    set +m
    deadline=$((SECONDS + 60))
    until engine_answers "$engine_url"; do
      alive "$dockerd_pid" || break
      if ((SECONDS >= deadline)); then
        tail -n 20 "$engine_log" >&2 2>/dev/null || true
        die "the private dockerd did not answer at $engine_url within 60 s; see $engine_log"
      fi
      sleep 0.2
    done
    alive "$dockerd_pid" && return 0
    wait "$dockerd_pid" 2>/dev/null || true
    dockerd_pid=""
    # overlay2 can be refused (overlay on overlay, inside some containers): vfs works
    # everywhere, only slower. As the harness does, it is tried once.
    if [ -z "$driver" ] && tail -n 30 "$engine_log" | grep -qi overlay; then
      log "the private dockerd refused overlay2 here; starting it with the vfs storage driver"
      driver=vfs
      continue
    fi
    tail -n 20 "$engine_log" >&2 2>/dev/null || true
    die "the private dockerd exited during start-up; see $engine_log"
  done
}

if [ -n "${DOCKER_HOST:-}" ]; then
  if engine_answers "$DOCKER_HOST"; then
    engine_note="$DOCKER_HOST"
  else
    engine_note="none answers at DOCKER_HOST=$DOCKER_HOST: 'berth services' will fail until it does"
  fi
elif engine_answers "$DEFAULT_ENGINE"; then
  engine_note="$DEFAULT_ENGINE"
elif [ "$(id -u)" -eq 0 ] && dockerd_bin="$(find_bin dockerd)"; then
  start_private_engine "$dockerd_bin"
  export DOCKER_HOST="$engine_url"
  log "no container engine answers at $DEFAULT_ENGINE; started a private one (dockerd pid $dockerd_pid)"
  engine_note="$engine_url, a private dockerd (pid $dockerd_pid, bridge $engine_bridge $engine_bip,"
  engine_note+=" data in $STATE_DIR/engine/, log $engine_log)"
else
  engine_note="none answers at $DEFAULT_ENGINE: 'berth services' will fail until one does; start one with"
  engine_note+=" 'sudo systemctl start docker' (Debian: apt-get install docker.io), or run 'make run'"
  engine_note+=" as root for a private one, or set DOCKER_HOST"
fi

# Creates the admin token on first run and prints it once; later runs print no secret.
"$VENV_BIN/python" -m app.admin ensure-token --path "$TOKEN_PATH"

if [ -f "$SUPERVISOR_DIR/supervisord.pid" ] && alive "$(cat "$SUPERVISOR_DIR/supervisord.pid")"; then
  die "a supervisord of this state directory runs already (pid $(cat "$SUPERVISOR_DIR/supervisord.pid"));" \
    "stop it, or set BERTH_STATE_DIR to another directory"
fi
mkdir -p "$SUPERVISOR_DIR" "$LOG_DIR"
# supervisord listens for the proxies (fcgi-programs, see scripts/supervisor/supervisord.conf)
# and keeps their sockets while it runs, so a restarted proxy's port never refuses a
# connection. The template reads their addresses from this env file; supervisord's sockets
# are IPv4 only, so with an IPv6 BERTH_BIND_HOST the proxies bind themselves.
listen_env="$SUPERVISOR_DIR/listen.env"
bind_host="${BERTH_BIND_HOST:-127.0.0.1}"
if [[ "$bind_host" == *:* ]]; then
  : >"$listen_env"
else
  printf 'BERTH_HTTP_LISTEN=tcp://%s:%s\nBERTH_HTTPS_LISTEN=tcp://%s:%s\n' \
    "$bind_host" "${BERTH_HTTP_PORT:-8080}" "$bind_host" "${BERTH_HTTPS_PORT:-8443}" >"$listen_env"
fi
if ! export_out="$("$VENV_BIN/honcho" export -f "$PROCFILE" -d "$ROOT" -a berth -s /bin/bash -u "$(id -un)" \
  -t "$ROOT/scripts/supervisor" -l "$LOG_DIR" ${concurrency:+-c "$concurrency"} \
  -e ".env,$listen_env" supervisord "$SUPERVISOR_DIR" 2>&1)"; then
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
