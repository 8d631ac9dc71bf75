#!/usr/bin/env bash
# N JAX processes on this machine, joined by jax.distributed through a localhost coordinator, each with D CPU
# devices and gloo CPU collectives: the multi-host code path (per-process batches, process-0 metrics,
# cooperative Orbax checkpoints) exercised on one box.
#
#   launch/local.sh NUM_PROCESSES DEVICES_PER_PROCESS [COMMAND ...]
#   launch/local.sh 2 4 .venv/bin/python -m jaxinpaint.main --config=configs/wconv.py:tiny --workdir=/tmp/mh
#
# COMMAND defaults to `python -m jaxinpaint.main` with the remaining arguments. Each process gets
# JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID and JAXINPAINT_DISTRIBUTED=1 (read by
# `jaxinpaint.sharding.initialize_distributed`, which `main --distributed` calls). Process i logs to
# $LOG_DIR/process_i.log (default: a fresh temporary directory); process 0 is also echoed here. When one process
# fails, the others are stopped and the exit status is the first failure's.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,13p' "$0" >&2
  exit 2
fi
NUM_PROCESSES=$1
DEVICES=$2
shift 2
if ! [[ $NUM_PROCESSES =~ ^[1-9][0-9]*$ && $DEVICES =~ ^[1-9][0-9]*$ ]]; then
  echo "error: NUM_PROCESSES ($NUM_PROCESSES) and DEVICES_PER_PROCESS ($DEVICES) must be positive integers" >&2
  exit 2
fi
PYTHON=${PYTHON:-python3}
if [[ $# -eq 0 || $1 == --* ]]; then
  set -- "$PYTHON" -m jaxinpaint.main "$@"
fi
PORT=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}
LOG_DIR=${LOG_DIR:-$(mktemp -d -t jaxinpaint_local.XXXXXX)}
mkdir -p "$LOG_DIR"
echo "launch/local.sh: $NUM_PROCESSES processes x $DEVICES CPU devices, coordinator localhost:$PORT, logs in $LOG_DIR" >&2

# drop a device count inherited from the caller (tests force 8): each process here gets DEVICES
BASE_XLA_FLAGS=$(sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g' <<<"${XLA_FLAGS:-}")
pids=()
stop_all() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
}
trap 'stop_all; exit 130' INT TERM

for ((i = 0; i < NUM_PROCESSES; i++)); do
  env JAX_COORDINATOR_ADDRESS="localhost:$PORT" JAX_NUM_PROCESSES="$NUM_PROCESSES" JAX_PROCESS_ID="$i" \
    JAXINPAINT_DISTRIBUTED=1 JAX_PLATFORMS=cpu JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo \
    XLA_FLAGS="$BASE_XLA_FLAGS --xla_force_host_platform_device_count=$DEVICES" \
    "$@" >"$LOG_DIR/process_$i.log" 2>&1 &
  pids+=($!)
done
tail -n +1 -f "$LOG_DIR/process_0.log" --pid="${pids[0]}" >&2 &
tail_pid=$!

status=0
for ((n = 0; n < NUM_PROCESSES; n++)); do
  code=0
  wait -n -p finished "${pids[@]}" || code=$?
  if ((code != 0 && status == 0)); then
    status=$code
    for i in "${!pids[@]}"; do [[ ${pids[$i]} == "$finished" ]] && failed=$i; done
    echo "launch/local.sh: process $failed exited with status $code (log: $LOG_DIR/process_$failed.log);" \
      "stopping the others" >&2
    tail -n 20 "$LOG_DIR/process_$failed.log" >&2
    stop_all
  fi
done
wait "$tail_pid" 2>/dev/null || true
exit $status
