#!/usr/bin/env bash
# Make this machine able to run, test and (with BOOTSTRAP_BENCH=1) benchmark berth:
#   1. the Debian packages whose binaries the platform and its tests start
#      (redis-server, pebble + pebble-challtestsrv, dockerd, busybox, and chromium for the
#      dashboard test, driven headless over the DevTools protocol);
#   2. a Python >= 3.11 virtualenv in .venv with exactly the pins of requirements.txt.
#
# Idempotent and quick when nothing is missing: a few `command -v` look-ups, one
# interpreter start and one sha256 of requirements.txt. Nothing is downloaded then.
#
# Missing packages are installed with apt-get when running as root on Debian; anywhere
# else the script prints the command to run and exits 1.
#
# Environment:
#   BOOTSTRAP_BENCH=1   also install the benchmark peers (wrk, nginx, haproxy, caddy, mitmproxy, certbot)
#   PYTHON=python3.11   interpreter used to create .venv (default: python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV=".venv"
VENV_PY="$VENV/bin/python"
REQUIREMENTS="requirements.txt"
STAMP="$VENV/.requirements.sha256"
PYTHON="${PYTHON:-python3}"
MIN_PY="3.11"

# "binary:debian-package" pairs.
REQUIRED=(
  "redis-server:redis-server"
  "redis-cli:redis-tools"
  "pebble:pebble"
  "pebble-challtestsrv:pebble"
  "dockerd:docker.io"
  "busybox:busybox-static"
  "make:make"
  "chromium:chromium"
)
BENCH=(
  "wrk:wrk"
  "nginx:nginx-light"
  "haproxy:haproxy"
  "caddy:caddy"
  "mitmdump:mitmproxy"
  "certbot:certbot"
)

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# True when the binary is on PATH or in a standard system directory (a non-root
# PATH often lacks the sbin directories, where dockerd, nginx and haproxy live).
have() {
  command -v "$1" >/dev/null 2>&1 && return 0
  local dir
  for dir in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
    [ -x "$dir/$1" ] && return 0
  done
  return 1
}

missing_bins=()
missing_pkgs=()
need_pkg() { # binary-or-module package
  missing_bins+=("$1")
  local p
  for p in "${missing_pkgs[@]+"${missing_pkgs[@]}"}"; do
    [ "$p" = "$2" ] && return 0
  done
  missing_pkgs+=("$2")
}

check_bins() {
  local pair
  for pair in "$@"; do
    have "${pair%%:*}" || need_pkg "${pair%%:*}" "${pair#*:}"
  done
}

check_bins "${REQUIRED[@]}"
if [ "${BOOTSTRAP_BENCH:-0}" = "1" ]; then
  check_bins "${BENCH[@]}"
fi

# The interpreter matters only when .venv has to be (re)created.
venv_ok() { [ -x "$VENV_PY" ] && "$VENV_PY" -c 'import sys' >/dev/null 2>&1; }

python_too_old=""
if ! venv_ok; then
  if ! command -v "$PYTHON" >/dev/null 2>&1; then
    need_pkg "$PYTHON" python3
    need_pkg "venv" python3-venv
  elif ! "$PYTHON" -c "import sys; sys.exit(sys.version_info < (${MIN_PY/./, }))" 2>/dev/null; then
    python_too_old="$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null || echo unknown)"
  elif ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    need_pkg "venv" python3-venv
  fi
fi

is_debian_root() { [ -f /etc/debian_version ] && [ "$(id -u)" -eq 0 ]; }

if [ -n "$python_too_old" ]; then
  log "$PYTHON is $python_too_old; berth needs Python >= $MIN_PY."
  log "Install it (Debian 12: sudo apt-get install python3 python3-venv) or run with PYTHON=/path/to/python3.11."
  exit 1
fi

if [ "${#missing_pkgs[@]}" -gt 0 ]; then
  if is_debian_root && command -v apt-get >/dev/null 2>&1; then
    log "missing: ${missing_bins[*]}"
    log "installing Debian packages: ${missing_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update
    apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${missing_pkgs[@]}"
  else
    {
      echo "bootstrap: missing: ${missing_bins[*]}"
      echo "bootstrap: berth needs these Debian packages: ${missing_pkgs[*]}"
      echo "bootstrap: install them with:"
      echo
      echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing_pkgs[*]}"
      echo
      if [ ! -f /etc/debian_version ]; then
        echo "bootstrap: (this is not Debian: install the equivalent packages of your system)"
      fi
      echo "bootstrap: then run this script again."
    } >&2
    exit 1
  fi
fi

# Python virtualenv.
if ! venv_ok; then
  if [ -e "$VENV" ]; then
    log "$VENV exists but its python does not run; recreating it"
    "$PYTHON" -m venv --clear "$VENV"
  else
    log "creating $VENV with $("$PYTHON" -c 'import sys; print(sys.executable)')"
    "$PYTHON" -m venv "$VENV"
  fi
  rm -f "$STAMP"
fi

want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
have_stamp="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want" != "$have_stamp" ]; then
  log "installing $REQUIREMENTS into $VENV"
  "$VENV_PY" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS"
  printf '%s\n' "$want" >"$STAMP"
fi

# The command line on the virtualenv's PATH: .venv/bin/berth is a link to the ./berth wrapper.
if [ "$(readlink "$VENV/bin/berth" 2>/dev/null)" != "../../berth" ]; then
  ln -sfn ../../berth "$VENV/bin/berth"
fi

# Byte-compile berth's own modules, as pip does for installed packages: each `berth` command
# is a new interpreter, and without .pyc files (PYTHONDONTWRITEBYTECODE set, or a read-only
# checkout) it would compile the command line's sources on every run. Only stale files are
# rewritten.
"$VENV_PY" -m compileall -q app workers proxy scheduler >/dev/null
