#!/usr/bin/env bash
# The device check, one command on a GPU (or TPU) machine, at most 5 minutes:
#   bench/device_check.sh                       # JSON -> bench/results/device_check_<backend>.json, table printed
#   DEVICE_CHECK_TINY=1 bench/device_check.sh   # CI size (32 px ':tiny' configs) on any backend, CPU included
# Extra arguments go to bench/device_check.py (e.g. --families=unet_pconv --dtypes=float32).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
args=(--budget_s="${DEVICE_CHECK_BUDGET_S:-240}")
if [[ "${DEVICE_CHECK_TINY:-0}" != "0" ]]; then
  args+=(--tiny)
fi
# 300 s hard stop: the budget starts no case after 240 s; the last case and the table fit in the rest
exec timeout 300 "$PYTHON" bench/device_check.py "${args[@]}" "$@"
