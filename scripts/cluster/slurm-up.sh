#!/usr/bin/env bash
# Start SLURM on this machine: munged + slurmctld + slurmd on localhost.
#
#   scripts/cluster/slurm-up.sh [NODES]
#
# NODES = 1 (default): one node with this machine's real CPUs and memory (as `slurmd -C` measures
# them). NODES > 1: that many slurmd daemons on this host (`slurmd -N NAME`, one port each), each
# declaring the machine's CPUs and memory, so that a multi-node job (Ray workers started with
# srun) runs for real on one machine.
#
# Everything lives under $QGEN_SLURM_DIR (default /tmp/qgen-slurm): its own munge key and socket,
# slurm.conf, state and spool dirs, logs and pid files, so a system SLURM/munge (if any) is
# untouched. Idempotent: with the same number of nodes up it only prints the environment line;
# with another number it restarts. Clients find the cluster through SLURM_CONF; the last line is
#   export SLURM_CONF=$QGEN_SLURM_DIR/slurm.conf
# Stop and clean with scripts/cluster/slurm-down.sh.
#
# Exit codes: 0 up, 1 failed (log tails printed), 2 bad argument, 77 skipped (no root, or
# packages missing and no package registry), which the tests turn into a skip with the reason.
set -euo pipefail

NODES=${1:-1}
DIR=${QGEN_SLURM_DIR:-/tmp/qgen-slurm}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=install-packages.sh
source "$HERE/install-packages.sh"

skip() { echo "SKIP: $*" >&2; exit 77; }
fail() { echo "FAILED: $*" >&2; for f in "$DIR"/log/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done; exit 1; }

case $NODES in ''|*[!0-9]*|0) echo "slurm-up.sh: NODES must be a positive integer, got '$NODES'" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || skip "starting slurmctld/slurmd needs root (uid is $(id -u))"
ensure_packages slurmctld:slurm-wlm slurmd:slurmd munged:munge || skip "$INSTALL_PROBLEM"

export SLURM_CONF="$DIR/slurm.conf"
HOST=$(hostname -s)

node_names() {  # the NODES node names: this host's name, or HOST-1 ... HOST-N
  if [ "$NODES" = 1 ]; then echo "$HOST"; else seq -f "$HOST-%g" 1 "$NODES"; fi
}

all_idle() {
  [ "$(sinfo -h -o '%D %T' 2>/dev/null | awk '$2 ~ /^(idle|mixed|allocated)$/ {n += $1} END {print n + 0}')" = "$NODES" ]
}

if [ "$(cat "$DIR/nodes" 2>/dev/null)" = "$NODES" ] && [ -f "$DIR/slurmctld.pid" ] \
   && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null && all_idle; then
  echo "export SLURM_CONF=$SLURM_CONF"
  exit 0
fi
[ -d "$DIR" ] && bash "$HERE/slurm-down.sh" >/dev/null

mkdir -p "$DIR"/{ctld,log}
echo "$NODES" > "$DIR/nodes"
# The node's real CPUs and memory, as slurmd itself measures them (e.g. "CPUs=2 ... RealMemory=24105").
HW=$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //' -e 's/ *UpTime=.*//')
NODE_LINES="" i=0
for name in $(node_names); do
  i=$((i + 1))
  # Several slurmd on one host: each its own port (6818 is the single node's default).
  NODE_LINES+="NodeName=$name NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$((17000 + i)) $HW State=UNKNOWN"$'\n'
done
NODE_LIST=$(node_names | paste -sd, -)

# --- munge: a private key and socket -----------------------------------------------------------
mungekey --create --keyfile="$DIR/munge.key" --bits=1024
chmod 600 "$DIR/munge.key"
munged --force --socket="$DIR/munge.socket" --key-file="$DIR/munge.key" \
  --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munged.seed" \
  || fail "munged did not start"

awk -v dir="$DIR" -v node="$HOST" -v lines="${NODE_LINES%$'\n'}" -v list="$NODE_LIST" '
  { gsub(/@DIR@/, dir); gsub(/@NODE@/, node); gsub(/@NODE_LIST@/, list) }
  /^@NODE_LINES@$/ { print lines; next }
  { print }' "$HERE/slurm.conf.in" > "$SLURM_CONF"

slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
for name in $(node_names); do
  slurmd -f "$SLURM_CONF" -N "$name" || fail "slurmd $name did not start"
done

for _ in $(seq 60); do
  if all_idle; then echo "export SLURM_CONF=$SLURM_CONF"; exit 0; fi
  sleep 1
done
fail "$NODES node(s) not idle after 60 s: $(sinfo -h -o '%N %T' 2>/dev/null | tr '\n' ' ')"
