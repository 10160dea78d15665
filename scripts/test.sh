#!/usr/bin/env bash
# The whole test suite: installs what the tests need (Debian mosquitto-clients, Python
# paho-mqtt and pytest in a virtualenv, Debian chromium and Node's playwright-core for the
# console test), then runs the Rust tests, the interop tests and the web console test.
# Works on a fresh Debian machine with Rust, as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=()
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

VENV="${AVIARY_VENV:-/var/tmp/aviary-venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> python venv at $VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check paho-mqtt==2.1.0 pytest==8.3.5 "cryptography>=42"

echo "==> cargo test"
cargo test --workspace --all-targets 2>&1
cargo test --workspace --doc 2>&1

echo "==> interop tests (paho-mqtt, mosquitto-clients)"
cargo build -p aviary --bin aviary
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
export AVIARY_BIN="${AVIARY_BIN:-$(cd "$TARGET_DIR" && pwd)/debug/aviary}"
"$VENV/bin/python" -m pytest -q tests/interop
# Again on one worker thread, as a broker pinned to one core runs: the broker task then
# writes to plain TCP sockets itself (`ConnectionContext::direct_writes`).
echo "==> interop tests on one tokio worker thread"
TOKIO_WORKER_THREADS=1 "$VENV/bin/python" -m pytest -q tests/interop

echo "==> web console test (headless Chromium, playwright-core)"
# `npm ci` only when node_modules is missing or the lockfile changed since the last install.
CONSOLE=tests/console
if ! cmp -s "$CONSOLE/package-lock.json" "$CONSOLE/node_modules/.aviary-installed-lock"; then
  (cd "$CONSOLE" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$CONSOLE/package-lock.json" "$CONSOLE/node_modules/.aviary-installed-lock"
fi
node "$CONSOLE/console.test.mjs"
