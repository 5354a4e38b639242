#!/usr/bin/env bash
# Stop the SLURM cluster started by slurm-up.sh (all its daemons) and remove its directory.
# Idempotent: a second run (or a run with nothing up) does nothing and exits 0.
# Cancels the cluster's jobs first so that their Ray processes are stopped by the jobs' own traps.
set -uo pipefail

DIR=${QGEN_SLURM_DIR:-/tmp/qgen-slurm}
export SLURM_CONF="$DIR/slurm.conf"

stop_pidfile() {  # stop_pidfile FILE: TERM the daemon, wait up to 10 s, then KILL
  local file=$1 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

if [ -f "$SLURM_CONF" ] && command -v scancel >/dev/null 2>&1; then
  scancel --full --quiet --state=RUNNING --user="$(id -un)" 2>/dev/null || true
  scancel --quiet --user="$(id -un)" 2>/dev/null || true
  # KillWait is 5 s in slurm.conf.in: give the jobs' traps that long to stop Ray.
  for _ in $(seq 15); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 1; done
fi
for pidfile in "$DIR"/slurmd-*.pid; do
  [ -e "$pidfile" ] && stop_pidfile "$pidfile"
done
stop_pidfile "$DIR/slurmctld.pid"
stop_pidfile "$DIR/munged.pid"
rm -rf "$DIR"
echo "slurm down ($DIR removed)"
