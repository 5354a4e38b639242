"""SLURM, for real: slurmctld + slurmd on this machine (scripts/cluster/slurm-up.sh), the smoke
sweep submitted with `qgen-sweep slurm`, the pre-timeout signal that requeues the job, and a
two-node job (two slurmd on this host) whose second Ray node is started by srun.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from cluster_helpers import QGEN, assert_complete_once, final_rows, wait_until

pytestmark = pytest.mark.cluster
SMOKE_TRIALS = 16
WAITING = ("PENDING", "CONFIGURING", "RUNNING")  # job states before it ends


def job_fields(job_id: str, env: dict[str, str]) -> dict[str, str]:
    """`scontrol show job` as KEY -> VALUE ({} once SLURM has forgotten the job)."""
    proc = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True,
                          text=True, check=False)
    return dict(re.findall(r"(\w+)=(\S*)", proc.stdout)) if proc.returncode == 0 else {}


def submit(tmp_path: Path, env: dict[str, str], *options: str,
           nodes: int = 1) -> tuple[str, Path, Path]:
    """`qgen-sweep slurm smoke --nodes N --submit`; returns (job id, results dir, job log)."""
    results = tmp_path / "smoke"
    proc = subprocess.run([QGEN, "slurm", "smoke", "--nodes", str(nodes), "--submit",
                           "--results-dir", str(results), *options], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    assert job_id.isdigit(), proc.stdout
    # The results directory is under pytest's /tmp: the node-local warning must say so.
    assert "looks node-local" in proc.stderr
    return job_id, results, tmp_path / f"slurm-qgen-smoke-{job_id}.out"


def wait_for_end(job_id: str, env: dict[str, str], log: Path, timeout: float) -> dict[str, str]:
    """Wait until the job is COMPLETED / FAILED / CANCELLED; return its last fields."""
    ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    fields: dict[str, str] = {}

    def done() -> bool:
        fields.update(job_fields(job_id, env))
        return fields.get("JobState") in ended

    try:
        wait_until(done, timeout, f"SLURM job {job_id} to end", poll=3)
    except AssertionError:
        subprocess.run(["scancel", job_id], env=env, check=False)
        raise AssertionError(f"job {job_id} did not end; log:\n{_read(log)}") from None
    return fields


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else "(no log)"


@pytest.mark.timeout(900)
def test_slurm_job_runs_every_smoke_trial(tmp_path, slurm_cluster):
    slurm_env = slurm_cluster(1)
    job_id, results, log = submit(tmp_path, slurm_env)
    fields = wait_for_end(job_id, slurm_env, log, timeout=780)
    assert fields["JobState"] == "COMPLETED", _read(log)
    assert "qgen-sweep launch exited with 0" in _read(log)
    assert "Ray stopped" in _read(log)
    # The node's Ray offers the CPUs SLURM gave the job: the whole node (--exclusive).
    assert f"1 node(s) up: {os.cpu_count()} CPUs, 0 GPUs" in _read(log)
    assert_complete_once(results, SMOKE_TRIALS)


@pytest.mark.timeout(1200)
def test_pre_timeout_signal_requeues_and_the_sweep_completes(tmp_path, slurm_cluster):
    slurm_env = slurm_cluster(1)
    # Longer trials (8 epochs, still the smoke grid) so the signal surely lands mid-sweep.
    job_id, results, log = submit(tmp_path, slurm_env, "--set", "train.epochs=8")
    wait_until(lambda: len(final_rows(results)) >= 2, 600, "two finished trials",
               alive=lambda: job_fields(job_id, slurm_env).get("JobState") in WAITING, poll=2)
    before = {r["trial_id"]: r["started_at"] for r in final_rows(results)}
    assert len(before) < SMOKE_TRIALS, "the sweep finished before the signal; make trials longer"
    # What SLURM sends `--signal-lead` seconds before the time limit, sent now, to the batch shell.
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], env=slurm_env, check=True)
    fields = wait_for_end(job_id, slurm_env, log, timeout=1000)
    text = _read(log)
    assert fields["JobState"] == "COMPLETED", text
    assert fields["Restarts"] == "1", text
    assert "received USR1: stopping the sweep" in text
    assert f"requeueing job {job_id}" in text
    assert "(restart 1)" in text
    rows = assert_complete_once(results, SMOKE_TRIALS)
    # Trials finished before the signal were skipped by the requeued job, not run again.
    after = {r["trial_id"]: r["started_at"] for r in rows}
    assert all(after[tid] == started for tid, started in before.items())


def test_sbatch_failure_gives_slurms_own_words(tmp_path, slurm_cluster):
    slurm_env = slurm_cluster(1)
    proc = subprocess.run([QGEN, "slurm", "smoke", "--submit", "--partition", "no-such-partition",
                           "--results-dir", str(tmp_path / "smoke")], cwd=tmp_path, env=slurm_env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "sbatch failed" in errors[0] and "invalid partition" in errors[0].lower()


@pytest.mark.timeout(900)
def test_two_node_job_starts_ray_workers_with_srun(tmp_path, slurm_cluster):
    env = slurm_cluster(2)  # two slurmd on this host, each declaring the machine's CPUs
    job_id, results, log = submit(tmp_path, env, nodes=2)
    fields = wait_for_end(job_id, env, log, timeout=780)
    text = _read(log)
    assert fields["JobState"] == "COMPLETED", text
    assert f"2 node(s) up: {2 * os.cpu_count()} CPUs, 0 GPUs" in text  # the srun node joined
    assert "qgen-sweep launch exited with 0" in text and "Ray stopped" in text
    assert "CANCELLED" not in text  # the worker step ended by itself after INT, not killed
    assert_complete_once(results, SMOKE_TRIALS)
