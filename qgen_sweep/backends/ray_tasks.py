"""Per-trial jobs on finished trials as plain Ray tasks (`measure`, `robustness`, `landscape`:
the backend of the shared post-hoc runner, qgen_sweep.posthoc; the jobs are independent, short,
and need no Tune).

Each job runs a "module:function" with `run_job`'s signature, `(results_dir, trial, settings) ->
summary`, in a worker with the trial's resources (the sweep spec's resources.cpu / resources.gpu)
and writes its own file of its store kind atomically, so a killed driver loses only the jobs in
flight; the next run skips what was written. A worker that dies (out of memory, killed) surfaces
here as a RayError and is recorded as a failure row of that kind by the driver.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from qgen_sweep.backends.ray import init_ray


def _run_job(job: str, results_dir: str, trial: dict[str, Any],
             settings: dict[str, Any]) -> dict[str, Any]:
    module, _, name = job.partition(":")
    return getattr(importlib.import_module(module), name)(results_dir, trial, settings)


def run_trial_jobs(
    job: str,
    kind: str,
    results_dir: str,
    trials: list[dict[str, Any]],
    settings: dict[str, Any],
    cpu: float,
    gpu: float,
    address: str | None = None,
    on_result: Callable[[dict[str, Any]], None] = lambda result: None,
    note: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run `job` as one Ray task per trial (rows {"trial_id", "bits", ...}); `on_result` sees
    each summary as it completes. A dead worker becomes a failure row of store kind `kind`."""
    import ray

    from qgen_sweep.store import ResultsStore

    cluster = init_ray(address)
    if gpu > 0 and cluster.get("GPU", 0) == 0:
        note(f"warning: the Ray cluster has no GPUs; running the jobs on CPUs (gpu = {gpu:g} "
             f"ignored)")
        gpu = 0.0
    # The job's device setting ("auto" by default) resolves to the GPU Ray assigns to the task
    # (Ray sets CUDA_VISIBLE_DEVICES for tasks with num_gpus > 0).
    # threads = the task's CPUs: two tasks on two cores must not each start two threads.
    settings = {**settings, "threads": max(1, int(cpu))}
    task = ray.remote(_run_job).options(num_cpus=cpu, num_gpus=gpu, max_retries=0)
    refs = {task.remote(job, results_dir, trial, settings): trial for trial in trials}
    pending, results = list(refs), []
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            trial = refs[ref]
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as error:  # the worker died before it could record
                message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
                ResultsStore(results_dir).record_failure(kind, trial["trial_id"], trial["bits"],
                                                         message, error_type="WorkerError")
                result = {"trial_id": trial["trial_id"], "bits": trial["bits"],
                          "status": "failed", "seconds": 0.0, "message": message}
            results.append(result)
            on_result(result)
    return results

