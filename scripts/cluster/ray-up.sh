#!/usr/bin/env bash
# Start a local multi-node Ray cluster on this machine for tests: a head and (by default) one more
# node joined with `ray start --address`, each with 1 CPU and its own custom resource
# ("qgen_head" / "qgen_node2"), so work lands on both. Both nodes run workers/ray-node.sh (the
# same script the SLURM template runs), each in its own session (process group) so that one node
# can be stopped or killed alone (scripts/cluster/ray-down.sh).
#
#   scripts/cluster/ray-up.sh [NODES]        NODES = 1 or 2 (default 2)
#
# Prints shell assignments for `eval`: QGEN_RAY_ADDRESS (GCS, for `launch --address`),
# QGEN_RAY_DASHBOARD (http address, for `ray job submit`), RAY_AUTH_MODE, RAY_AUTH_TOKEN (a
# random token: the cluster accepts no one else). Idempotent: with the cluster up it only prints.
# Everything lives under $QGEN_RAY_DIR (default /tmp/qgen-ray2), Ray's temp dirs included.
set -euo pipefail

NODES=${1:-2}
DIR=${QGEN_RAY_DIR:-/tmp/qgen-ray2}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export QGEN_PYTHON=${QGEN_PYTHON:-$ROOT/.venv/bin/python}
export PATH="$(dirname "$QGEN_PYTHON"):$PATH"
export QGEN_RAY_TMPDIR=$DIR RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=token
# Pseudo job ids: they choose the nodes' port blocks (qgen_sweep.cluster.ports), away from the
# low slots that real SLURM job ids 1, 2, ... use on a shared test machine.
HEAD_JOB=${QGEN_RAY_JOB_ID:-50}

case $NODES in 1|2) ;; *) echo "ray-up.sh: NODES must be 1 or 2, got '$NODES'" >&2; exit 2 ;; esac

alive() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

print_env() {
  local address port
  address=$(cat "$DIR/address")
  port=${address##*:}
  echo "QGEN_RAY_ADDRESS=$address"
  echo "QGEN_RAY_DASHBOARD=http://127.0.0.1:$((port + 3))"  # ports.py: dashboard = base + 3
  echo "RAY_AUTH_MODE=token"
  echo "RAY_AUTH_TOKEN=$(cat "$DIR/token")"
}

if alive head && [ -s "$DIR/address" ] && { [ "$NODES" = 1 ] || alive node2; }; then
  print_env
  exit 0
fi
[ -d "$DIR" ] && bash "$ROOT/scripts/cluster/ray-down.sh" >/dev/null
mkdir -p "$DIR"
chmod 700 "$DIR"
"$QGEN_PYTHON" -c 'import secrets; print(secrets.token_hex(32))' > "$DIR/token"
RAY_AUTH_TOKEN=$(cat "$DIR/token")
export RAY_AUTH_TOKEN

start_node() {  # start_node NAME ROLE JOB_ID TARGET RESOURCE
  setsid bash "$ROOT/workers/ray-node.sh" "$2" "$3" "$4" --num-cpus=1 --resources="{\"$5\": 1}" \
    > "$DIR/$1.log" 2>&1 < /dev/null &
  echo $! > "$DIR/$1.pid"
}

fail() { echo "ray-up.sh: $*" >&2; tail -n 20 "$DIR"/*.log >&2; bash "$ROOT/scripts/cluster/ray-down.sh" >&2; exit 1; }

start_node head head "$HEAD_JOB" "$DIR/address" qgen_head
for _ in $(seq 180); do [ -s "$DIR/address" ] && break; alive head || break; sleep 1; done
[ -s "$DIR/address" ] || fail "the head did not start"
# Wait for the head's raylet too: node2 probes its own ports only once the head's are bound.
"$QGEN_PYTHON" -m qgen_sweep.cluster.wait "$(cat "$DIR/address")" 1 --timeout 180 >/dev/null \
  || fail "the head node did not register"
if [ "$NODES" = 2 ]; then
  start_node node2 worker $((HEAD_JOB + 1)) "$(cat "$DIR/address")" qgen_node2
  "$QGEN_PYTHON" -m qgen_sweep.cluster.wait "$(cat "$DIR/address")" 2 --timeout 180 >/dev/null \
    || fail "the second node did not join"
fi
print_env
