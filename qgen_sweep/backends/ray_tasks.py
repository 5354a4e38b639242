"""Measure jobs as plain Ray tasks (the measures are independent, short, and need no Tune).

Each job runs qgen_sweep.measures.run.run_job in a worker with the trial's resources (the sweep
spec's resources.cpu / resources.gpu) and writes its own measures file atomically, so a killed
driver loses only the jobs in flight; the next `qgen-sweep measure` skips what was written. A
worker that dies (out of memory, killed) surfaces here as a RayError and is recorded as a failure
row by the driver.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qgen_sweep.backends.ray import init_ray


def _run_job(results_dir: str, trial: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    from qgen_sweep.measures.run import run_job

    return run_job(results_dir, trial, settings)


def run_measure_jobs(
    results_dir: str,
    trials: list[dict[str, Any]],
    settings: dict[str, Any],
    cpu: float,
    gpu: float,
    address: str | None = None,
    on_result: Callable[[dict[str, Any]], None] = lambda result: None,
    note: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run one Ray task per trial; `on_result` sees each summary as it completes."""
    import ray

    from qgen_sweep.measures.run import record_failure
    from qgen_sweep.store import ResultsStore

    cluster = init_ray(address)
    if gpu > 0 and cluster.get("GPU", 0) == 0:
        note(f"warning: the Ray cluster has no GPUs; measuring on CPUs (gpu = {gpu:g} ignored)")
        gpu = 0.0
    # The job's device setting ("auto" by default) resolves to the GPU Ray assigns to the task
    # (Ray sets CUDA_VISIBLE_DEVICES for tasks with num_gpus > 0).
    # threads = the task's CPUs: two tasks on two cores must not each start two threads.
    settings = {**settings, "threads": max(1, int(cpu))}
    task = ray.remote(_run_job).options(num_cpus=cpu, num_gpus=gpu, max_retries=0)
    refs = {task.remote(results_dir, trial, settings): trial for trial in trials}
    pending, results = list(refs), []
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            trial = refs[ref]
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as error:  # the worker died before it could record
                message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
                record_failure(ResultsStore(results_dir), trial["trial_id"], trial["bits"], message)
                result = {"trial_id": trial["trial_id"], "bits": trial["bits"],
                          "status": "failed", "seconds": 0.0, "message": message}
            results.append(result)
            on_result(result)
    return results
