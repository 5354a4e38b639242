"""Ray Tune backend (with ray_ddp.py and ray_tasks.py, the only modules that import ray).

One Tuner per launch over the tasks of a `TaskSource`:
- a source whose tasks are known up front (a grid) is passed as `tune.grid_search(tasks)`;
- any other (an adaptive search) becomes Tune's search algorithm (`_SourceSearcher`): Tune asks it
  for a task whenever a slot is free and tells it how each trial ended; with `pruning`, every
  epoch's objective is reported to Tune and its ASHA scheduler stops unpromising trials.
Either way `FailureConfig(max_failures)` gives the retries (each retry calls the trial engine
again on the same checkpoint directory, so it continues from last.pt), and `reuse_actors=True`,
which cut Ray's per-trial overhead for no-op trials on 2 cores from ~1.7 s to ~0.45 s (50 trials,
measured 2026-11-29): trials of a sweep are tiny and many. Resume is a fresh Tuner over what is
left, not Tuner.restore (the store is the ledger; restore cannot add trials or change the spec).
Tune's own console output and result loggers are switched off: the store and our progress
replace them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any

from qgen_sweep.backends import (
    DEFAULT_TRIAL_FN,
    FINISHED,
    Pruning,
    RunContext,
    RunSettings,
    TaskSource,
)
from qgen_sweep.backends.progress import Progress
from qgen_sweep.backends.runner import run_or_stop
from qgen_sweep.store import ResultsStore, read_attempts
from qgen_sweep.trial.config import EpochMetrics, TrialConfig, TrialResult, TrialRuntime

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
from ray.tune.search import Searcher  # noqa: E402

EPOCH = "epoch"  # ASHA's time attribute: the trial's epoch (1-based), so a resumed trial keeps it
REPORTING_TRIAL_FN = "qgen_sweep.backends.ray:run_trial_reporting"
_REPORTING = threading.local()  # the objective the running trial reports per epoch (worker side)


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


# ---- worker side ---------------------------------------------------------------------------------
def _trainable(config: dict[str, Any], ctx: RunContext, parallel=None,  # noqa: ANN001
               objective: str | None = None) -> None:
    """The Tune function trainable: one attempt of one task (runs in a Ray worker); with
    `parallel` (ray_ddp.Parallel), the driver of that attempt's data-parallel workers. With a
    pruning `objective`, the last report carries the final row's value of it (Tune checks that
    every result has the scheduler's metric)."""
    task = config["task"]
    if parallel is not None:
        from qgen_sweep.backends.ray_ddp import run_parallel

        summary = run_parallel(task, ctx, parallel)
    else:
        _REPORTING.objective = objective
        summary = run_or_stop(task, ctx)
    if objective is not None:
        row = ResultsStore(ctx.store_root).final_row(task["trial_id"], int(task["bits"]),
                                                     columns=[objective])
        value = row[objective] if row is not None and row[objective] is not None else math.nan
        summary = {**summary, objective: value}
    tune.report(summary)


def run_trial_reporting(config: TrialConfig, runtime: TrialRuntime, checkpoint_dir: Path | None,
                        on_epoch) -> TrialResult:
    """The trial engine, also reporting each epoch's pruning objective to Tune (for ASHA).

    The last epoch is not reported: the trial is finishing anyway, and a stop there would throw
    away a complete run. A stop arrives as SystemExit from tune.report (Ray's function trainable),
    which ends the attempt without a failure row (the source decides what the stop means: an
    adaptive search never runs that configuration again).
    """
    from qgen_sweep.trial.train import run_trial

    objective = getattr(_REPORTING, "objective", None)

    def report(metrics: EpochMetrics) -> None:
        on_epoch(metrics)
        value = epoch_objective(metrics, objective) if objective else math.nan
        if metrics.epoch < config.epochs and math.isfinite(value):
            tune.report({objective: value, EPOCH: metrics.epoch})

    return run_trial(config, runtime, checkpoint_dir, report)


def epoch_objective(metrics: EpochMetrics, objective: str) -> float:
    """The per-epoch value of an objective column (gap = test loss - train loss)."""
    if objective == "gap":
        return metrics.test_loss - metrics.train_loss
    return float(getattr(metrics, objective))


# ---- driver side ---------------------------------------------------------------------------------
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


# Tune pickles its callbacks and search algorithm with the experiment state; what they drive (a
# Progress with its output stream, a task source with its open studies) stays in this process
# and is found again by its key.
_LIVE: dict[int, Any] = {}


def _keep(obj: Any) -> int:
    _LIVE[id(obj)] = obj
    return id(obj)


class _ProgressCallback(tune.Callback):
    """Forwards Tune's trial events to our Progress (runs in the driver)."""

    def __init__(self, progress: Progress, store: ResultsStore) -> None:
        self.key = _keep(progress)
        self.store = store

    @property
    def progress(self) -> Progress:
        return _LIVE[self.key]

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


class _SourceSearcher(Searcher):
    """Tune's search algorithm over a TaskSource that suggests as it goes (an adaptive search):
    each Tune trial runs the task the source hands out; its per-epoch objective and its end are
    told back to the source."""

    def __init__(self, source: TaskSource) -> None:
        super().__init__()
        self.key = _keep(source)
        self.tasks: dict[str, dict[str, Any]] = {}  # Tune trial id -> the task it runs
        self.reported: dict[str, set[int]] = {}  # Tune trial id -> epochs told to the source

    @property
    def source(self) -> TaskSource:
        return _LIVE[self.key]

    def suggest(self, trial_id: str) -> dict | str | None:
        task = self.source.next_task()
        if task is None or task == FINISHED:
            return Searcher.FINISHED if task == FINISHED else None
        self.tasks[trial_id] = task
        return {"task": task}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pruning, task = self.source.pruning, self.tasks.get(trial_id)
        if pruning is None or task is None or EPOCH not in result:
            return
        value = result.get(pruning.objective)
        epochs = self.reported.setdefault(trial_id, set())
        if isinstance(value, float) and math.isfinite(value) and result[EPOCH] not in epochs:
            epochs.add(result[EPOCH])
            self.source.on_epoch(task, result[EPOCH], value)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if result and not error:
            # Tune hands the result that made ASHA stop a trial to on_trial_complete only, not
            # to on_trial_result: record it, so a stopped trial keeps the epoch it stopped at.
            self.on_trial_result(trial_id, result)
        self.reported.pop(trial_id, None)
        task = self.tasks.pop(trial_id, None)
        if task is not None:
            self.source.on_complete(task, error)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the source keeps its own state (an adaptive search: its journal)."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a resumed launch opens its source again."""


def _tid(trial) -> str:
    return trial.config["task"]["trial_id"]


def _search_name(trial) -> str:
    """An adaptive search may run one configuration in several Tune trials (after a failure)."""
    return f"{trial.config['task']['trial_id']}-{trial.trial_id}"


def _ray_error_line(trial) -> str:
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:
        text = ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "the process running the trial died"


def _concurrency(settings: RunSettings, cluster: dict[str, float], gpu: float) -> int:
    """Trials at once for a searcher: the spec's limit, else what the cluster holds. A sequential
    sampler must not be asked for more suggestions than can run, or TPE turns into random
    search."""
    if settings.max_concurrent:
        return settings.max_concurrent
    by_cpu = int(cluster.get("CPU", 1) // settings.cpu) if settings.cpu else 1
    by_gpu = int(cluster.get("GPU", 0) // gpu) if gpu else by_cpu
    return max(1, min(by_cpu, by_gpu))


def _asha(pruning: Pruning):
    from ray.tune.schedulers import ASHAScheduler

    epochs = max(pruning.max_epochs, 1)
    return ASHAScheduler(time_attr=EPOCH, metric=pruning.objective, mode=pruning.mode,
                         max_t=epochs, grace_period=min(pruning.grace_epochs, epochs),
                         reduction_factor=pruning.reduction_factor, stop_last_trials=False)


def _trainable_for(ctx: RunContext, settings: RunSettings, cluster: dict[str, float],
                   gpu: float, progress: Progress, objective: str | None):
    """The trainable with its resources: one process per trial with `gpu`, or a light driver
    of the trial's data-parallel workers (`resources.gpus_per_trial`, ray_ddp.py)."""
    if settings.gpus_per_trial:
        from qgen_sweep.backends.ray_ddp import DRIVER_CPU, plan_parallel

        parallel = plan_parallel(settings.gpus_per_trial, settings.cpu, cluster, progress.note)
        return tune.with_resources(
            tune.with_parameters(_trainable, ctx=ctx, parallel=parallel, objective=objective),
            {"cpu": DRIVER_CPU})
    return tune.with_resources(tune.with_parameters(_trainable, ctx=ctx, objective=objective),
                               {"cpu": settings.cpu, "gpu": gpu})


def run(source: TaskSource, ctx: RunContext, settings: RunSettings,
        progress: Progress) -> None:
    """Run the source's tasks as Tune trials; returns when every one finished or failed for
    good, or the source is finished."""
    progress.phase("starting Ray...")
    cluster = init_ray(settings.address)
    progress.phase("waiting for the first trial...")
    pruning = source.pruning
    if pruning is not None and ctx.trial_fn == DEFAULT_TRIAL_FN and not settings.gpus_per_trial:
        # ASHA needs every epoch's objective: the engine wrapped to report it (unless a test or
        # a benchmark swapped the engine itself; data-parallel workers report nothing to Tune,
        # so ASHA lets their trials run to the end)
        ctx = dataclasses.replace(ctx, trial_fn=REPORTING_TRIAL_FN)
    # GPUs per single-process trial (a data-parallel trial's workers take whole GPUs instead)
    gpu = 0.0 if settings.gpus_per_trial else effective_gpu(settings, cluster, progress.note)
    trainable = _trainable_for(ctx, settings, cluster, gpu, progress,
                               pruning.objective if pruning else None)
    if source.tasks is not None:
        param_space = {"task": tune.grid_search(source.tasks)}
        tune_config = tune.TuneConfig(
            max_concurrent_trials=settings.max_concurrent or None, reuse_actors=True,
            trial_name_creator=_tid, trial_dirname_creator=_tid)
    else:
        param_space = None
        tune_config = tune.TuneConfig(
            search_alg=_SourceSearcher(source), scheduler=_asha(pruning) if pruning else None,
            num_samples=-1, max_concurrent_trials=_concurrency(settings, cluster, gpu),
            reuse_actors=True, trial_name_creator=_search_name,
            trial_dirname_creator=_search_name)
    tuner = tune.Tuner(
        trainable, param_space=param_space, tune_config=tune_config,
        run_config=tune.RunConfig(
            name=dt.datetime.now().strftime("%Y%m%d-%H%M%S"),
            storage_path=str(Path(ctx.store_root).resolve() / "ray"), verbose=0,
            failure_config=tune.FailureConfig(max_failures=settings.max_failures),
            callbacks=[_ProgressCallback(progress, ResultsStore(ctx.store_root))],
            log_to_file=False, stop=StopOnInputError(),
        ),
    )
    try:
        tuner.fit()
    finally:
        _LIVE.clear()
