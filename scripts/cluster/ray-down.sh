#!/usr/bin/env bash
# Stop nodes of the local Ray cluster started by ray-up.sh.
#
#   scripts/cluster/ray-down.sh              stop every node, remove $QGEN_RAY_DIR
#   scripts/cluster/ray-down.sh node2        stop only the second node (TERM: a clean leave)
#   scripts/cluster/ray-down.sh node2 --kill SIGKILL the node's whole process group (a lost node)
#
# Idempotent: nodes that are not running are skipped.
set -uo pipefail

DIR=${QGEN_RAY_DIR:-/tmp/qgen-ray2}
only=${1:-all}
sig=TERM
[ "${2:-}" = --kill ] && sig=KILL

stop_node() {  # stop_node NAME: signal its process group (ray-up.sh started it with setsid)
  local file="$DIR/$1.pid" pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    if [ "$sig" = KILL ]; then
      kill -KILL -- "-$pid" 2>/dev/null
    else
      kill -TERM "$pid" 2>/dev/null  # ray-node.sh stops `ray start --block` and cleans up
      for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -KILL -- "-$pid" 2>/dev/null
    fi
  fi
  rm -f "$file"
}

if [ "$only" = all ]; then
  stop_node node2
  stop_node head
  rm -rf "$DIR"
  echo "ray cluster down ($DIR removed)"
else
  stop_node "$only"
  echo "ray node $only stopped ($sig)"
fi
