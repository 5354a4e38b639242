#!/usr/bin/env bash
# Start one Ray node of a batch job and hold it until TERM / INT / HUP; then stop it and remove
# its temporary directory. The SLURM batch template runs it on the first node (head) and, through
# srun, on every other node (worker); scripts/cluster/ray-up.sh uses it for a local test cluster.
#
#   ray-node.sh head   JOB_ID ADDRESS_FILE [ray start options, e.g. --num-cpus=8 --num-gpus=4]
#   ray-node.sh worker JOB_ID HEAD_ADDRESS [ray start options]
#
# JOB_ID picks the node's port block (python -m qgen_sweep.cluster.ports): two jobs sharing a
# node get disjoint ports, and each node probes that its block is free. The head writes
# "IP:PORT" to ADDRESS_FILE once it accepts clients. Each node gets its own Ray temp dir, so two
# jobs on one node never touch each other's sessions, and is stopped through its own
# `ray start --block` process (never `ray stop`, which would kill every Ray on the node).
#
# Environment: QGEN_PYTHON (python with qgen_sweep, default python3), QGEN_NODE_IP (this node's
# address when the default route's is wrong, e.g. to use InfiniBand), QGEN_RAY_TMPDIR (parent of
# the temp dir, default /tmp), RAY_AUTH_MODE / RAY_AUTH_TOKEN (the job's shared token).
set -euo pipefail

role=${1:?role (head|worker)} job=${2:?job id} target=${3:?address file (head) or head address (worker)}
shift 3
PY=${QGEN_PYTHON:-python3}
ip_opt=()
[ -n "${QGEN_NODE_IP:-}" ] && ip_opt=(--ip "$QGEN_NODE_IP")
eval "$("$PY" -m qgen_sweep.cluster.ports --job-id "$job" --role "$role" "${ip_opt[@]}")"

# Unix socket paths under the temp dir must stay under 107 bytes: keep the prefix short.
tmp=$(mktemp -d "${QGEN_RAY_TMPDIR:-/tmp}/qgr-$job-XXXX")
ray_pid=""
stop() {
  trap - TERM INT HUP
  # TERM makes `ray start --block` stop every process of this node (about 5 s on 2 cores).
  if [ -n "$ray_pid" ] && kill -TERM "$ray_pid" 2>/dev/null; then
    wait "$ray_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
  exit 0
}
trap stop TERM INT HUP

case $role in
  head) mode=(--head) ;;
  worker) mode=(--address="$target") ;;
  *) echo "ray-node.sh: role must be head or worker, got '$role'" >&2; exit 2 ;;
esac
# Inside SLURM, each node offers Ray the CPUs SLURM gave the job on that node (set per node by
# srun); options given to this script come later and win (ray start keeps the last).
cpus=()
[ -n "${SLURM_CPUS_ON_NODE:-}" ] && cpus=(--num-cpus="$SLURM_CPUS_ON_NODE")
# shellcheck disable=SC2086  # QGEN_RAY_ARGS is a list of --option=value words
ray start "${mode[@]}" --block --temp-dir="$tmp" --disable-usage-stats $QGEN_RAY_ARGS "${cpus[@]}" "$@" &
ray_pid=$!

if [ "$role" = head ]; then
  address="$QGEN_NODE_IP:$QGEN_RAY_PORT"
  until ray status --address "$address" >/dev/null 2>&1; do
    kill -0 "$ray_pid" 2>/dev/null || { echo "ray-node.sh: the Ray head exited during startup" >&2; rm -rf "$tmp"; exit 1; }
    sleep 1
  done
  echo "$address" > "$target.tmp" && mv "$target.tmp" "$target"
fi
# `wait` returns early when a trapped signal arrives; stop() then ends the script.
rc=0
wait "$ray_pid" || rc=$?
rm -rf "$tmp"
exit "$rc"
