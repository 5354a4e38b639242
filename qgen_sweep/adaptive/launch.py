"""launch / resume of an adaptive (`search = "optuna"`) sweep, and its validate / dry-run text.

Same results directory, lock, store, trial engine, resources and retries as a grid launch
(`qgen_sweep.backends.launcher`); what differs is who picks the next trial: one Optuna study per
precision (or one overall) whose journal lives in `<results>/optuna/journal.log`. `launch` and
`resume` are the same operation: settle what a killed driver left open (`study.reconcile`), then
ask for suggestions until every study has `n_trials` finished trials.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from qgen_sweep.backends import DEFAULT_TRIAL_FN, RunContext, RunSettings
from qgen_sweep.backends.launcher import LaunchOptions, quarantine_corrupt, settings_for
from qgen_sweep.backends.progress import Progress
from qgen_sweep.errors import QGenError, UsageError
from qgen_sweep.plan import axis_counts
from qgen_sweep.spec import SweepSpec
from qgen_sweep.store import ResultsStore, SweepLock

PER_EPOCH_TRIAL_FN = "qgen_sweep.backends.ray_optuna:run_trial_reporting"


def budget(spec: SweepSpec) -> int:
    """Finished trials the sweep asks for in all (n_trials per study). Optuna-free, for `list`."""
    settings = spec.optuna
    if settings is None:
        raise UsageError(f"{spec.name} is not an adaptive sweep (search = {spec.search!r})")
    studies = len(spec.axes.get("bits", (1,))) if settings.per_precision else 1
    return settings.n_trials * studies


def describe(spec: SweepSpec) -> list[str]:
    """What `validate` prints for an adaptive sweep: studies, space, budget, sampler, pruner."""
    from qgen_sweep.adaptive.study import space_size, study_keys

    s = spec.optuna
    assert s is not None
    keys = study_keys(spec)
    size = space_size(spec, keys[0].bits)
    lines = [f"{spec.name} ({spec.source}): search = optuna, {len(keys)} "
             f"stud{'y' if len(keys) == 1 else 'ies'} x {s.n_trials} trials = {budget(spec)} "
             f"trials over a space of {size} configurations per study"]
    lines += [f"  {name:<14} {described}" for name, described in axis_counts(spec)]
    pruner = "none" if s.pruner == "none" else (
        f"ASHA (grace {s.grace_epochs} epochs, reduction factor {s.reduction_factor})")
    sampler = f"TPE ({s.startup_trials} random start-up trials)" if s.sampler == "tpe" \
        else "random"
    lines += [
        f"  studies        {', '.join(k.name for k in keys)}",
        f"  objective      {s.direction} {s.objective}; sampler {sampler}, seed {s.seed}; "
        f"pruner {pruner}",
    ]
    res = spec.resources
    lines.append(f"  resources per trial: cpu {res.cpu:g}, gpu {res.gpu:g}; max concurrent "
                 f"{res.max_concurrent or 'as resources allow'}; max failures {res.max_failures}")
    return lines


def dry_run_lines(spec: SweepSpec, results_dir: Path) -> list[str]:
    """What `launch --dry-run` prints: the studies and how far each one already is."""
    from qgen_sweep.adaptive.report import study_rows
    from qgen_sweep.adaptive.study import study_keys

    lines = describe(spec)
    done = {r["study"]: r["finished"] for r in study_rows(results_dir)}
    for key in study_keys(spec):
        lines.append(f"  {key.name}: {done.get(key.name, 0)} of {spec.optuna.n_trials} finished")
    lines.append(f"dry run: nothing written (results would go to {results_dir})")
    return lines


def run_search(spec: SweepSpec, options: LaunchOptions, command: str,
               stream: TextIO | None = None) -> ResultsStore:
    """Lock the results directory, settle a killed driver's leftovers, search until every
    study has its trials. Returns the store (the caller prints the summary)."""
    from qgen_sweep.adaptive.study import finished_count
    from qgen_sweep.backends.launcher import _check_same_sweep

    from qgen_sweep.backends.launcher import preflight

    # every configuration of the space, its data and the device, before anything runs
    preflight(spec, options.results_dir, options.backend, options.address)
    run_settings = settings_for(spec, options)
    store = ResultsStore(options.results_dir)
    with SweepLock(store.root, command) as lock:
        _check_same_sweep(store, spec)
        progress = Progress(budget(spec), 0, 0, stream=stream, interval=options.progress_interval)
        quarantine_corrupt(store, progress, reruns=False)
        studies = _open_studies(spec, store, progress)
        finished = sum(min(finished_count(s.study), s.settings.n_trials) for s in studies)
        progress.already_done, progress.to_run = finished, budget(spec) - finished
        if progress.to_run > 0:
            _execute(spec, options, run_settings, store, studies, progress, lock.token)
        else:
            progress.note(f"every study of {spec.name} has its {spec.optuna.n_trials} trials")
    return store


def _open_studies(spec: SweepSpec, store: ResultsStore, progress: Progress) -> list:
    """Load (or create) every study, settle what a killed driver left open, rebuild the plan."""
    from qgen_sweep.adaptive.study import (
        AdaptiveStudy,
        PlanLedger,
        open_storage,
        reconcile,
        study_keys,
    )

    storage = open_storage(store.root, repair=True)  # we hold the sweep lock: no other writer
    keys = study_keys(spec)
    ledger = PlanLedger(spec, store)
    studies = [AdaptiveStudy(spec, key, storage, store, ledger) for key in keys]
    for study in studies:
        settled = reconcile(spec, study.key, study.study, store)
        if any(settled.values()):
            progress.note(f"{study.key.name}: {settled['told']} interrupted trial(s) had "
                          f"results, {settled['requeued']} continue from their checkpoints")
    ledger.rebuild(keys, {s.key.name: s.study for s in studies})
    return studies


def _execute(spec: SweepSpec, options: LaunchOptions, settings: RunSettings,
             store: ResultsStore, studies: list, progress: Progress, lease: str) -> None:
    import dataclasses

    from qgen_sweep.backends.faults import ENV_VAR as FAULT_ENV
    from qgen_sweep.provenance import provenance

    per_epoch = spec.optuna.pruner == "asha" and options.backend == "ray"
    # ASHA needs every epoch's objective: the engine wrapped to report it (unless a test or
    # benchmark swapped the engine itself).
    trial_fn = PER_EPOCH_TRIAL_FN if per_epoch and options.trial_fn == DEFAULT_TRIAL_FN \
        else options.trial_fn
    ctx = RunContext(
        store_root=str(store.root.resolve()), sweep=spec.name,
        runtime=dataclasses.asdict(spec.runtime), provenance=provenance(), trial_fn=trial_fn,
        fault_file=os.environ.get(FAULT_ENV) or None, loggers=options.loggers, lease=lease,
    )
    progress.watch(store.root)  # trials are suggested as it goes: configs from plan.parquet
    with progress:
        if options.backend == "local":
            if spec.optuna.pruner != "none":
                progress.note("note: the pruner needs Ray Tune (ASHA); --backend local runs "
                              "every trial to the end")
            run_local_search(studies, ctx, settings, progress)
        else:
            from qgen_sweep.backends.ray_optuna import run_ray_search

            run_ray_search(studies, ctx, settings, progress, per_epoch=per_epoch)
    progress.raise_input_error()


def run_local_search(studies: list, ctx: RunContext, settings: RunSettings,
                     progress: Progress) -> None:
    """Ask / run / tell, one trial at a time in this process (debugging, fast tests)."""
    from qgen_sweep.backends.local import run_local
    from qgen_sweep.backends.runner import task_of

    for study in studies:
        while study.remaining() > 0 and not study.give_up():
            trial = study.study.ask()
            planned = study.admit(trial, study.space(trial))
            if planned is None:
                progress.on_complete(trial.user_attrs.get("trial_id", "?"), "done")
                continue
            task = task_of(planned.trial_id, planned.config, planned.lr_index)
            run_local([task], ctx, settings, progress)
            study.finish(planned.trial_id, planned.config.bits, error=True)
            if progress.input_error is not None:
                return


def check_complete(spec: SweepSpec, store: ResultsStore) -> None:
    """Raise (exit 1) when some study has fewer finished trials than it asked for."""
    from qgen_sweep.adaptive.report import study_rows

    finished = {r["study"]: r["finished"] for r in study_rows(store.root)}
    n = spec.optuna.n_trials
    missing = sum(max(n - finished.get(key.name, 0), 0) for key in _keys(spec))
    if missing > 0:
        raise QGenError(f"{missing} of {budget(spec)} trials of the search have no result "
                        f"(failed, or the search was stopped); see `qgen-sweep status`, fix the "
                        f"cause, then `qgen-sweep resume`")


def _keys(spec: SweepSpec) -> list:
    from qgen_sweep.adaptive.study import study_keys

    return study_keys(spec)
