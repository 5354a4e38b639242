"""Ray Tune backend: the only module that imports ray.

One Tuner over the trials that have no final row: our own grid expansion passed as
`tune.grid_search(list_of_tasks)`, `FailureConfig(max_failures)` for retries (each retry calls
the trial engine again on the same checkpoint directory, so it continues from last.pt), and
`reuse_actors=True`, which cut Ray's per-trial overhead for no-op trials on 2 cores from ~1.7 s to
~0.45 s (50 trials, measured 2026-11-29): trials of a sweep are tiny and many. Resume is a fresh
Tuner over the missing trials, not Tuner.restore (the store is the ledger; restore cannot add
trials or change the spec). Tune's own console output and result loggers are switched off: the
store and our progress line replace them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from qgen_sweep.backends import RunContext, RunSettings
from qgen_sweep.backends.progress import Progress
from qgen_sweep.backends.runner import run_or_stop
from qgen_sweep.store import ResultsStore, read_attempts

# Set before ray is imported: old-style (silent at verbose=0) console output, no CSV / JSON /
# TensorBoard loggers per trial (we write Parquet), no usage stats, no log dedup noise.
_RAY_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "1e9",
    "RAY_DEDUP_LOGS": "0",
}
for _key, _value in _RAY_ENV.items():
    os.environ.setdefault(_key, _value)

import ray  # noqa: E402 - after the environment above
from ray import tune  # noqa: E402


def init_ray(address: str | None) -> dict[str, float]:
    """Join `address` or start a local cluster sized to this machine (once per process)."""
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR,
                                  "log_to_driver": False, "configure_logging": True}
        # Inside a Ray job (`ray job submit ... -- qgen-sweep launch`) Ray sets RAY_ADDRESS:
        # join that cluster, as ray.init() itself would; num_cpus is refused when joining.
        address = address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **kwargs)
        else:  # a local cluster: every core of this machine
            ray.init(num_cpus=os.cpu_count(), **kwargs)
    for name in ("ray", "ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return ray.cluster_resources()


def effective_gpu(settings: RunSettings, cluster: dict[str, float], note) -> float:
    """The spec's GPU fraction, or 0 with one warning when the cluster has no GPUs."""
    if settings.gpu > 0 and cluster.get("GPU", 0) == 0:
        note(f"warning: the Ray cluster has no GPUs; running every trial on CPUs "
             f"(resources.gpu = {settings.gpu:g} ignored)")
        return 0.0
    return settings.gpu


def _trainable(config: dict[str, Any], ctx: RunContext, parallel=None) -> None:  # noqa: ANN001
    """The Tune function trainable: one attempt of one trial (runs in a Ray worker); with
    `parallel` (ray_ddp.Parallel), the driver of that attempt's data-parallel workers."""
    if parallel is not None:
        from qgen_sweep.backends.ray_ddp import run_parallel

        tune.report(run_parallel(config["task"], ctx, parallel))
        return
    tune.report(run_or_stop(config["task"], ctx))


class StopOnInputError(tune.Stopper):
    """Stops the whole run at a trial's input error (`runner.run_or_stop`): every other trial
    would fail the same way, and retrying cannot help."""

    def __init__(self) -> None:
        self.stopped = False

    def __call__(self, trial_id: str, result: dict) -> bool:
        self.stopped = self.stopped or "input_error" in result
        return "input_error" in result

    def stop_all(self) -> bool:
        return self.stopped


_PROGRESS: dict[int, Progress] = {}


class _ProgressCallback(tune.Callback):
    """Forwards Tune's trial events to our Progress (runs in the driver)."""

    def __init__(self, progress: Progress, store: ResultsStore) -> None:
        # Tune pickles its callbacks with the experiment state; the Progress (which holds
        # an output stream) stays in this process and is found again by its key.
        self.key = id(progress)
        _PROGRESS[self.key] = progress
        self.store = store

    @property
    def progress(self) -> Progress:
        return _PROGRESS[self.key]

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.progress.on_start(_tid(trial))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.progress.on_result(_tid(trial), trial.last_result)

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self.progress.on_retry(_tid(trial), self._reason(trial))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.progress.on_fail(_tid(trial), self._reason(trial))

    def _reason(self, trial) -> str:
        """The attempt's failure row; written here when the worker died before writing it (for a
        fused bundle, one row per member: they all died with it)."""
        task = trial.config["task"]
        reasons = [self._member_reason(trial, member) for member in task.get("bundle", [task])
                   if not self.store.path("trials", member["trial_id"], member["bits"]).exists()]
        return reasons[0] if reasons else "see `qgen-sweep status`"

    def _member_reason(self, trial, task: dict[str, Any]) -> str:
        attempt = len(read_attempts(self.store, task["trial_id"]))
        if attempt and not self.store.failure_path(task["trial_id"], attempt).exists():
            message = _ray_error_line(trial)
            self.store.record_failure("trials", task["trial_id"], task["bits"], message,
                                      attempt=attempt, error_type="WorkerDied")
            return f"WorkerDied: {message}"
        row = self.store.failure(task["trial_id"], attempt) if attempt else None
        return f"{row['error_type']}: {row['message']}" if row else "see `qgen-sweep status`"


def _tid(trial) -> str:
    return trial.config["task"]["trial_id"]


def _ray_error_line(trial) -> str:
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        text = ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "the process running the trial died"


def run_ray(tasks: list[dict[str, Any]], ctx: RunContext, settings: RunSettings,
            progress: Progress) -> None:
    """Run the tasks as Tune trials; returns when every one finished or failed for good."""
    progress.phase("starting Ray...")
    cluster = init_ray(settings.address)
    progress.phase("waiting for the first trial...")
    store = ResultsStore(ctx.store_root)
    if settings.gpus_per_trial:  # each trial drives its own Ray Train workers (ray_ddp.py)
        from qgen_sweep.backends.ray_ddp import DRIVER_CPU, plan_parallel

        parallel = plan_parallel(settings.gpus_per_trial, settings.cpu, cluster, progress.note)
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, ctx=ctx, parallel=parallel), {"cpu": DRIVER_CPU})
    else:
        gpu = effective_gpu(settings, cluster, progress.note)
        trainable = tune.with_resources(tune.with_parameters(_trainable, ctx=ctx),
                                        {"cpu": settings.cpu, "gpu": gpu})
    tuner = tune.Tuner(
        trainable,
        param_space={"task": tune.grid_search(tasks)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=settings.max_concurrent or None, reuse_actors=True,
            trial_name_creator=_tid, trial_dirname_creator=_tid,
        ),
        run_config=tune.RunConfig(
            name=dt.datetime.now().strftime("%Y%m%d-%H%M%S"),
            storage_path=str(Path(ctx.store_root).resolve() / "ray"), verbose=0,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            callbacks=[_ProgressCallback(progress, store)], log_to_file=False,
            stop=StopOnInputError(),
        ),
    )
    try:
        tuner.fit()
    finally:
        _PROGRESS.clear()
