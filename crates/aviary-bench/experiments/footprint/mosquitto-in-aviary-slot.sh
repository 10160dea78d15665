#!/bin/bash
# Runs Mosquitto with the shim in aviary-bench's Aviary slot, so that `matrix` alternates
# Mosquitto with and without it:
#   SHIM=$PWD/shim560.so aviary-bench matrix --aviary $PWD/mosquitto-in-aviary-slot.sh ...
# aviary-bench passes `--config FILE` (an Aviary TOML file); the listener's port is read
# from it and Mosquitto gets the config aviary-bench gives Mosquitto (src/brokers.rs).
set -euo pipefail
config=$2
dir=$(dirname "$config")
port=$(sed -n 's/^bind = "127\.0\.0\.1:\([0-9]*\)"$/\1/p' "$config" | head -1)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 16\nmax_queued_messages 1000\nset_tcp_nodelay true\nmax_connections -1\nlog_dest stderr\nlog_type error\nlog_type warning\n' \
    "$port" > "$dir/mosquitto.conf"
exec env LD_PRELOAD="${SHIM:?the shim to preload}" /usr/sbin/mosquitto -c "$dir/mosquitto.conf"
