#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine: munged + slurmctld + slurmd on localhost.
#
# Everything lives under $QGEN_SLURM_DIR (default /tmp/qgen-slurm): its own munge key and socket,
# slurm.conf, state and spool dirs, logs and pid files, so a system SLURM/munge (if any) is
# untouched. Idempotent: a second run with the daemons up only prints the environment line.
# Clients find the cluster through SLURM_CONF; the last line printed is
#   export SLURM_CONF=$QGEN_SLURM_DIR/slurm.conf
# Stop and clean with scripts/cluster/slurm-down.sh.
#
# Exit codes: 0 up, 1 failed (log tails printed), 77 skipped (no root / no package registry),
# which the tests turn into a skip with the printed reason.
set -euo pipefail

DIR=${QGEN_SLURM_DIR:-/tmp/qgen-slurm}
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=install-packages.sh
source "$HERE/install-packages.sh"

skip() { echo "SKIP: $*" >&2; exit 77; }
fail() { echo "FAILED: $*" >&2; for f in "$DIR"/log/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done; exit 1; }

[ "$(id -u)" = 0 ] || skip "starting slurmctld/slurmd needs root (uid is $(id -u))"
ensure_packages slurmctld:slurm-wlm munged:munge || skip "$INSTALL_PROBLEM"

export SLURM_CONF="$DIR/slurm.conf"
if [ -f "$DIR/slurmctld.pid" ] && kill -0 "$(cat "$DIR/slurmctld.pid")" 2>/dev/null \
   && scontrol ping >/dev/null 2>&1 && sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
  echo "export SLURM_CONF=$SLURM_CONF"
  exit 0
fi

mkdir -p "$DIR"/{ctld,spool,log}
NODE=$(hostname -s)
# The node's real CPUs and memory, as slurmd itself measures them (e.g. "CPUs=2 ... RealMemory=24105").
HW=$(slurmd -C | head -n 1 | sed -e 's/^NodeName=[^ ]* //')
# --- munge: a private key and socket -----------------------------------------------------------
if ! { [ -S "$DIR/munge.socket" ] && munge -n -S "$DIR/munge.socket" 2>/dev/null | unmunge -S "$DIR/munge.socket" >/dev/null 2>&1; }; then
  [ -f "$DIR/munge.key" ] || mungekey --create --keyfile="$DIR/munge.key" --bits=1024
  chmod 600 "$DIR/munge.key"
  munged --force --socket="$DIR/munge.socket" --key-file="$DIR/munge.key" \
    --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munged.seed" \
    || fail "munged did not start"
fi

sed -e "s|@DIR@|$DIR|g" -e "s|@NODE@|$NODE|g" -e "s|@HW@|$HW|g" "$HERE/slurm.conf.in" > "$SLURM_CONF"

slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
slurmd -f "$SLURM_CONF" || fail "slurmd did not start"

for _ in $(seq 60); do
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$state" in idle|mixed|allocated) echo "export SLURM_CONF=$SLURM_CONF"; exit 0 ;; esac
  sleep 1
done
fail "node $NODE not idle after 60 s (state: ${state:-none})"
