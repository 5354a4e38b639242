"""The adaptive strategy (`search = "optuna"`): Optuna studies choose the trials as they go.

Same results directory, lock, store, trial engine, resources, retries and backends as a grid
(qgen_sweep/launcher.py runs both); what differs is who picks the next trial: one Optuna study
per precision (or one overall) whose journal lives in `<results>/optuna/journal.log`. `launch`
and `resume` are the same operation: settle what a killed driver left open (`study.reconcile`),
then ask for suggestions until every study has `n_trials` finished trials.

`StudiesSource` is the backends' TaskSource over the studies: each task it hands out is one
suggestion (Optuna's ask and the define-by-run space), and how the task ended is told back
(`AdaptiveStudy.finish` reads the trial's final row). Suggestions go to the study furthest from
its budget, so the precisions advance side by side. With `pruner = "asha"` the source asks the
backend to stop unpromising trials early (Ray Tune's ASHA) and reports their per-epoch values to
the study.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qgen_sweep.backends import FINISHED, Pruning, task_of
from qgen_sweep.errors import UsageError
from qgen_sweep.plan import PlannedTrial, axis_counts
from qgen_sweep.search import Work
from qgen_sweep.spec import SweepSpec
from qgen_sweep.spec_optuna import OptunaSettings

if TYPE_CHECKING:
    from qgen_sweep.adaptive.study import AdaptiveStudy
    from qgen_sweep.backends.progress import Progress
    from qgen_sweep.store import ResultsStore


def _settings(spec: SweepSpec) -> OptunaSettings:
    """The spec's [optuna] settings; a usage error for any other search (optuna-free, unlike
    study.settings_of, so that `list` and `validate` need not import optuna)."""
    if spec.optuna is None:
        raise UsageError(f"{spec.name} is not an adaptive sweep (search = {spec.search!r})")
    return spec.optuna


def budget(spec: SweepSpec) -> int:
    """Finished trials the sweep asks for in all (n_trials per study). Optuna-free, for `list`."""
    settings = _settings(spec)
    studies = len(spec.axes.get("bits", (1,))) if settings.per_precision else 1
    return settings.n_trials * studies


class OptunaSearch:
    """Optuna studies over the grid's space (see the module docstring)."""

    reruns_incomplete = False  # a lost result is not rerun: the search suggests other trials

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        self.settings = _settings(spec)

    def total(self, trials: list[PlannedTrial]) -> int:
        return budget(self.spec)

    def describe(self, trials: list[PlannedTrial]) -> list[str]:
        from qgen_sweep.adaptive.study import space_size, study_keys

        spec, s = self.spec, self.settings
        keys = study_keys(spec)
        size = space_size(spec, keys[0].bits)
        lines = [f"{spec.name} ({spec.source}): search = optuna, {len(keys)} "
                 f"stud{'y' if len(keys) == 1 else 'ies'} x {s.n_trials} trials = "
                 f"{budget(spec)} trials over a space of {size} configurations per study"]
        lines += [f"  {name:<14} {described}" for name, described in axis_counts(spec)]
        pruner = "none" if s.pruner == "none" else (
            f"ASHA (grace {s.grace_epochs} epochs, reduction factor {s.reduction_factor})")
        sampler = f"TPE ({s.startup_trials} random start-up trials)" if s.sampler == "tpe" \
            else "random"
        res = spec.resources
        lines += [
            f"  studies        {', '.join(k.name for k in keys)}",
            f"  objective      {s.direction} {s.objective}; sampler {sampler}, seed {s.seed}; "
            f"pruner {pruner}",
            f"  resources per trial: cpu {res.cpu:g}, gpu {res.gpu:g}; max concurrent "
            f"{res.max_concurrent or 'as resources allow'}; max failures {res.max_failures}",
        ]
        return lines

    def dry_run(self, trials: list[PlannedTrial], store: ResultsStore) -> list[str]:
        from qgen_sweep.adaptive.report import study_rows
        from qgen_sweep.adaptive.study import study_keys

        done = {r["study"]: r["finished"] for r in study_rows(store.root)}
        return self.describe(trials) + [
            f"  {key.name}: {done.get(key.name, 0)} of {self.settings.n_trials} finished"
            for key in study_keys(self.spec)]

    def pending(self, trials: list[PlannedTrial]) -> dict[Any, int]:
        # one study per precision: its budget; one study over every precision: which bits its
        # trials get is the sampler's choice, so the row is "any"
        if self.settings.per_precision:
            return {bits: self.settings.n_trials for bits in sorted({t.config.bits
                                                                      for t in trials})}
        return {"any": budget(self.spec)}

    def open(self, store: ResultsStore, trials: list[PlannedTrial], progress: Progress,
             bundle_size: int | None) -> Work:
        from qgen_sweep.adaptive.study import finished_count

        studies = self._open_studies(store, progress)
        finished = sum(min(finished_count(s.study), s.settings.n_trials) for s in studies)
        source = StudiesSource(studies, progress, self._pruning(trials))
        return Work(source, done=finished, to_run=budget(self.spec) - finished,
                    finished_note=f"every study of {self.spec.name} has its "
                                  f"{self.settings.n_trials} trials")

    def _open_studies(self, store: ResultsStore, progress: Progress) -> list[AdaptiveStudy]:
        """Load (or create) every study, settle what a killed driver left open, rebuild the
        plan."""
        from qgen_sweep.adaptive.study import (
            AdaptiveStudy,
            PlanLedger,
            open_storage,
            reconcile,
            study_keys,
        )

        storage = open_storage(store.root, repair=True)  # we hold the sweep lock: no other writer
        keys = study_keys(self.spec)
        ledger = PlanLedger(self.spec, store)
        studies = [AdaptiveStudy(self.spec, key, storage, store, ledger) for key in keys]
        for study in studies:
            settled = reconcile(self.spec, study.key, study.study, store, storage)
            if any(settled.values()):
                progress.note(f"{study.key.name}: {settled['told']} interrupted trial(s) had "
                              f"results, {settled['requeued']} continue from their checkpoints")
        ledger.rebuild(keys, {s.key.name: s.study for s in studies})
        return studies

    def _pruning(self, trials: list[PlannedTrial]) -> Pruning | None:
        s = self.settings
        if s.pruner == "none":
            return None
        return Pruning(objective=s.objective, mode=s.mode,
                       max_epochs=max(t.config.epochs for t in trials),
                       grace_epochs=s.grace_epochs, reduction_factor=s.reduction_factor)

    def incomplete(self, store: ResultsStore) -> str | None:
        from qgen_sweep.adaptive.report import study_rows
        from qgen_sweep.adaptive.study import study_keys

        finished = {r["study"]: r["finished"] for r in study_rows(store.root)}
        n = self.settings.n_trials
        missing = sum(max(n - finished.get(key.name, 0), 0) for key in study_keys(self.spec))
        if missing <= 0:
            return None
        return (f"{missing} of {budget(self.spec)} trials of the search have no result (failed, "
                f"or the search was stopped); see `qgen-sweep status`, fix the cause, then "
                f"`qgen-sweep resume`")

    def status_lines(self, root: Path) -> list[str]:
        from qgen_sweep.adaptive.report import status_lines

        return status_lines(root)

    def status_data(self, root: Path) -> dict[str, Any]:
        from qgen_sweep.adaptive.report import study_rows

        rows = study_rows(root)
        return {"studies": rows} if rows else {}


class StudiesSource:
    """The TaskSource of an adaptive search (see the module docstring)."""

    tasks = None  # suggested as the search goes

    def __init__(self, studies: list[AdaptiveStudy], progress: Progress,
                 pruning: Pruning | None) -> None:
        self.studies, self.progress, self.pruning = studies, progress, pruning
        self.owner: dict[str, AdaptiveStudy] = {}  # running trial id -> the study it belongs to
        self.gave_up: set[str] = set()  # studies whose giving up was noted

    def next_task(self) -> dict[str, Any] | str | None:
        for study in sorted(self.studies, key=lambda s: -s.remaining()):
            while study.remaining() > 0 and not study.give_up():
                trial = study.study.ask()
                planned = study.admit(trial, study.space(trial))
                if planned is not None:
                    self.owner[planned.trial_id] = study
                    return task_of(planned.trial_id, planned.config, planned.lr_index)
                outcome = trial.user_attrs.get("outcome")
                if trial.user_attrs.get("reused") and outcome != "pruned":
                    # settled from its stored final row (a configuration the pruner stopped
                    # before is not counted again: like a suggestion that waited on a run the
                    # pruner stopped, it adds no finished trial to this run's progress)
                    self.progress.on_complete(trial.user_attrs.get("trial_id", "?"),
                                              "diverged" if outcome == "diverged" else "done")
        return FINISHED if all(self._exhausted(s) for s in self.studies) else None

    @staticmethod
    def _exhausted(study: AdaptiveStudy) -> bool:
        """No suggestion will ever be needed again (budget reached, or too many failures)."""
        return (study.remaining() <= 0 or study.give_up()) and not study.in_flight()

    def on_epoch(self, task: dict[str, Any], epoch: int, value: float) -> None:
        study = self.owner.get(task["trial_id"])
        trial = study.running.get(task["trial_id"]) if study is not None else None
        if trial is not None and math.isfinite(value):
            trial.report(value, epoch)

    def on_complete(self, task: dict[str, Any], error: bool) -> None:
        study = self.owner.pop(task["trial_id"], None)
        if study is None:
            return
        study.finish(task["trial_id"], int(task["bits"]), error)
        if study.give_up() and study.key.name not in self.gave_up:
            self.gave_up.add(study.key.name)
            self.progress.note(f"{study.key.name}: stopped after {study.failed} trials failed "
                               f"for good; see `qgen-sweep status`")
