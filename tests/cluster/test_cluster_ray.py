"""Multi-node Ray, for real: two Ray nodes on this machine, one lost mid-sweep; a Ray job.

The nodes come from scripts/cluster/ray-up.sh (each `ray start` node with 1 CPU and its own
custom resource, run by workers/ray-node.sh as in a SLURM job); the sweeps are real
`qgen-sweep` subprocesses writing a real Parquet store.
"""

from __future__ import annotations

import subprocess

import pytest
from cluster_helpers import (
    BIN,
    QGEN,
    RAY_DIR,
    REPO,
    SCRIPTS,
    assert_complete_once,
    final_rows,
    training_processes,
    wait_until,
)

from qgen_sweep.store import ResultsStore

pytestmark = pytest.mark.cluster
SMOKE_TRIALS = 16
# Longer trials than the smoke default (3 epochs) so that the second node is surely mid-trial
# when it is killed; the sweep is still the smoke sweep (same grid, 16 trials).
LONGER = ("--set", "train.epochs=8")


@pytest.mark.timeout(900)
def test_two_nodes_lose_one_mid_sweep(tmp_path, ray_cluster):
    env = ray_cluster(2)
    results = tmp_path / "smoke"
    launch = subprocess.Popen(
        [QGEN, "launch", "smoke", "--address", env["QGEN_RAY_ADDRESS"], "--results-dir",
         str(results), *LONGER], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    node2 = int((RAY_DIR / "node2.pid").read_text())
    try:
        # Trials run on the second node (it has half the cluster's CPUs) ...
        wait_until(lambda: training_processes(node2), 600, "a trial training on node 2",
                   alive=lambda: launch.poll() is None)
        before = {r["trial_id"]: r["started_at"] for r in final_rows(results)}
        # ... and then that node is lost: SIGKILL to its whole process group, no goodbye.
        subprocess.run(["bash", str(SCRIPTS / "ray-down.sh"), "node2", "--kill"], check=True,
                       capture_output=True, timeout=60)
        output, _ = launch.communicate(timeout=700)
    finally:
        if launch.poll() is None:
            launch.kill()
    assert launch.returncode == 0, output
    rows = assert_complete_once(results, SMOKE_TRIALS)
    # Trials finished before the loss were not run again.
    after = {r["trial_id"]: r["started_at"] for r in rows}
    assert all(after[tid] == started for tid, started in before.items())
    # The trial(s) lost with node 2 were retried: a failure record each, then a final row.
    failures = ResultsStore(results).read("failures")
    assert failures is not None and failures.num_rows >= 1, output
    retried = {r["trial_id"]: r["attempts"] for r in rows if r["attempts"] > 1}
    assert set(failures.column("trial_id").to_pylist()) <= set(retried), (retried, output)


@pytest.mark.timeout(900)
def test_ray_job_submit_runs_the_smoke_sweep(tmp_path, ray_cluster):
    env = ray_cluster(1)
    results = tmp_path / "smoke"
    # The documented path: from the repository, the working dir travels to the cluster; the
    # results directory is absolute, on storage the cluster's nodes share (here: one machine).
    proc = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", env["QGEN_RAY_DASHBOARD"],
         "--working-dir", ".", "--", "qgen-sweep", "launch", "smoke", "--results-dir",
         str(results)], cwd=REPO, env=env, capture_output=True, text=True, timeout=800,
        check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "succeeded" in output
    assert_complete_once(results, SMOKE_TRIALS)
