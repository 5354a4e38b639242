"""Ray Tune wiring of an adaptive sweep: OptunaSearch per study, ASHA as the optional pruner.

- Each study gets a `_LedgerSearch`, Ray's `OptunaSearch` (ray.tune.search.optuna, Ray 2.60) over
  the study's define-by-run space, on the study's journal storage. It adds the store rules of
  `qgen_sweep.adaptive.study`: a suggestion whose configuration already has a final row is told
  that value and replaced by a new suggestion without starting a Ray trial; one whose
  configuration is training waits for it; the outcome the study is told on completion is read
  from the trial's final row (the kept model's metrics), not from the last reported epoch.
- `_StudiesSearch` multiplexes the per-precision studies behind one Tune searcher, so all
  precisions share the cluster; it ends the search (`Searcher.FINISHED`) when every study has its
  n_trials finished trials, and counts trials that failed for good as not done.
- Pruning: OptunaSearch always builds its study with Optuna's NopPruner, so Optuna's own pruners
  cannot act through it; Ray's ASHA scheduler can. With `pruner = "asha"` every epoch's objective
  is reported to Tune (`run_trial_reporting`); a trial ASHA stops has no final row and is told
  PRUNED.
- The searcher state lives in the journal, so `save`/`restore` of Tune's experiment checkpoint
  are no-ops: resume is a fresh Tuner over the same studies (as for the grid, see ray.py).
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from qgen_sweep.backends import RunContext, RunSettings
from qgen_sweep.backends.progress import Progress
from qgen_sweep.backends.ray import (
    _PROGRESS,
    StopOnInputError,
    _ProgressCallback,
    effective_gpu,
    init_ray,
)
from qgen_sweep.backends.runner import run_or_stop, task_of
from qgen_sweep.store import ResultsStore
from qgen_sweep.trial.config import EpochMetrics, TrialConfig, TrialResult, TrialRuntime

EPOCH = "epoch"  # ASHA's time attribute: the trial's epoch (1-based), so a resumed trial keeps it
_REPORTING = threading.local()  # the objective the running trial reports per epoch (worker side)


class _LedgerSearch(OptunaSearch):
    """OptunaSearch over one study that follows the store's ledger rules (module docstring)."""

    def __init__(self, adaptive: Any, storage: Any, progress: Progress) -> None:
        settings = adaptive.settings
        super().__init__(space=adaptive.space, metric=settings.objective, mode=settings.mode,
                         sampler=adaptive.study.sampler, study_name=adaptive.key.name,
                         storage=storage)
        # Tune pickles its search algorithm with the experiment state; the Progress (a lock and an
        # output stream) stays in this process and is found again by its key.
        self.adaptive, self.progress_key = adaptive, id(progress)
        _PROGRESS[self.progress_key] = progress
        self.planned: dict[str, Any] = {}  # Ray trial id -> PlannedTrial
        self.reported: dict[str, set[int]] = {}  # Ray trial id -> epochs told to the study

    @property
    def progress(self) -> Progress:
        return _PROGRESS[self.progress_key]

    def exhausted(self) -> bool:
        """No suggestion will ever be needed again (budget reached, or too many failures)."""
        return (self.adaptive.remaining() <= 0 or self.adaptive.give_up()) and \
            not self.adaptive.in_flight()

    def suggest(self, trial_id: str) -> dict | str | None:
        while self.adaptive.remaining() > 0 and not self.adaptive.give_up():
            params = super().suggest(trial_id)
            planned = self.adaptive.admit(self._ot_trials[trial_id], params)
            if planned is not None:
                self.planned[trial_id] = planned
                return {"task": task_of(planned.trial_id, planned.config, planned.lr_index),
                        "study": self.adaptive.key.name}
            settled = self._ot_trials.pop(trial_id)  # told already: ask again for this Ray trial
            if settled.user_attrs.get("reused"):
                self.progress.on_complete(planned_id(settled), _label(settled))
        return Searcher.FINISHED if self.exhausted() else None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        if EPOCH in result and isinstance(value, float) and math.isfinite(value):
            trial = self._ot_trials[trial_id]
            if result[EPOCH] not in self.reported.setdefault(trial_id, set()):
                trial.report(value, result[EPOCH])
                self.reported[trial_id].add(result[EPOCH])

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if result and not error:
            # Tune hands the result that made ASHA stop a trial to on_trial_complete only, not
            # to on_trial_result: record it, so a pruned trial keeps the epoch it stopped at.
            self.on_trial_result(trial_id, result)
        self.reported.pop(trial_id, None)
        planned = self.planned.pop(trial_id)
        self._ot_trials.pop(trial_id, None)
        self.adaptive.finish(planned.trial_id, planned.config.bits, error)
        self._completed_trials.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study is in the journal file (see the module docstring)."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a resumed search reloads the studies from the journal."""


def planned_id(trial: Any) -> str:
    return trial.user_attrs.get("trial_id", "?")


def _label(trial: Any) -> str:
    return "diverged" if trial.user_attrs.get("outcome") == "diverged" else "done"


class _StudiesSearch(Searcher):
    """One Tune searcher over several studies: each suggestion goes to the study furthest from
    its budget, so the precisions advance side by side."""

    def __init__(self, searchers: list[_LedgerSearch], metric: str, mode: str) -> None:
        super().__init__(metric=metric, mode=mode)
        self.searchers = searchers
        self.owner: dict[str, _LedgerSearch] = {}

    def suggest(self, trial_id: str) -> dict | str | None:
        order = sorted(self.searchers, key=lambda s: -s.adaptive.remaining())
        for searcher in order:
            suggestion = searcher.suggest(trial_id)
            if isinstance(suggestion, dict):
                self.owner[trial_id] = searcher
                return suggestion
        if all(s.exhausted() for s in self.searchers):
            return Searcher.FINISHED
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.owner:
            self.owner[trial_id].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        owner = self.owner.pop(trial_id, None)
        if owner is not None:
            owner.on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the studies are in the journal file."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a resumed search reloads the studies from the journal."""


# ---- worker side ---------------------------------------------------------------------------------
def run_trial_reporting(config: TrialConfig, runtime: TrialRuntime, checkpoint_dir: Path | None,
                        on_epoch) -> TrialResult:
    """The trial engine, also reporting each epoch's objective to Tune (for ASHA).

    The last epoch is not reported: the trial is finishing anyway, and a stop there would throw
    away a complete run. A stop arrives as SystemExit from tune.report (Ray's function trainable),
    which ends the attempt without a failure row; last.pt stays for a later continuation.
    """
    from ray import tune

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


def _trainable(config: dict[str, Any], ctx: RunContext, objective: str, per_epoch: bool) -> None:
    """One attempt of one suggested trial; the last report carries the final row's objective."""
    from ray import tune

    from qgen_sweep.adaptive.study import stored_outcome

    _REPORTING.objective = objective if per_epoch else None
    summary = run_or_stop(config["task"], ctx)
    task = config["task"]
    outcome = stored_outcome(ResultsStore(ctx.store_root), task["trial_id"], task["bits"],
                             objective)
    value = math.nan if outcome is None or outcome.value is None else outcome.value
    tune.report({**summary, objective: value})


# ---- driver side ---------------------------------------------------------------------------------
def _concurrency(settings: RunSettings, cluster: dict[str, float], gpu: float) -> int:
    """Trials at once: the spec's limit, else what the cluster holds. A sequential sampler must
    not be asked for more suggestions than can run, or TPE turns into random search."""
    if settings.max_concurrent:
        return settings.max_concurrent
    by_cpu = int(cluster.get("CPU", 1) // settings.cpu) if settings.cpu else 1
    by_gpu = int(cluster.get("GPU", 0) // gpu) if gpu else by_cpu
    return max(1, min(by_cpu, by_gpu))


def _scheduler(adaptive: Any):
    from ray.tune.schedulers import ASHAScheduler

    s = adaptive.settings
    epochs = int(adaptive.spec.fixed.get("epochs", 1))
    return ASHAScheduler(time_attr=EPOCH, metric=s.objective, mode=s.mode, max_t=max(epochs, 1),
                         grace_period=min(s.grace_epochs, max(epochs, 1)),
                         reduction_factor=s.reduction_factor, stop_last_trials=False)


def _name(trial) -> str:
    return f"{trial.config['task']['trial_id']}-{trial.trial_id}"


def run_ray_search(studies: list, ctx: RunContext, settings: RunSettings, progress: Progress,
                   per_epoch: bool = False) -> None:
    """Search until every study has its trials (or gave up after repeated failures)."""
    progress.phase("starting Ray...")
    cluster = init_ray(settings.address)
    progress.phase("waiting for the first trial...")
    from ray import tune

    gpu = effective_gpu(settings, cluster, progress.note)
    store = ResultsStore(ctx.store_root)
    storage = studies[0].study._storage  # one journal storage object shared by every study
    first = studies[0].settings
    searcher = _StudiesSearch([_LedgerSearch(s, storage, progress) for s in studies],
                              metric=first.objective, mode=first.mode)
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, ctx=ctx, objective=first.objective, per_epoch=per_epoch),
        {"cpu": settings.cpu, "gpu": gpu})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=_scheduler(studies[0]) if per_epoch else None,
            num_samples=-1, max_concurrent_trials=_concurrency(settings, cluster, gpu),
            reuse_actors=True, trial_name_creator=_name, trial_dirname_creator=_name,
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
    for study in studies:
        if study.give_up():
            progress.note(f"{study.key.name}: stopped after {study.failed} trials failed for "
                          f"good; see `qgen-sweep status`")
