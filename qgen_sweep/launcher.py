"""launch / resume: the one launch path of every sweep, whatever its search strategy.

    store = run_sweep(spec, LaunchOptions(results_dir=...), "launch smoke")
    check_complete(spec, store)        # QGenError (exit 1) when some trials have no result

Before anything is written or started, `preflight` plans and validates every trial and checks
the data, the device and the results directory. Then, under the sweep lock: the directory must
hold this sweep (or none), files that do not read back are moved to `corrupt/`, the search
strategy (qgen_sweep/search/) records its plan and says what is left, and a backend
(qgen_sweep/backends/) runs it with one progress display. The store is the ledger, so `launch`
on a partly finished sweep and `resume` are the same operation; `resume` reads the resolved
spec saved in the results directory, so it needs none of the original `--set` overrides.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from qgen_sweep.backends import BACKENDS, DEFAULT_TRIAL_FN, RunContext, RunSettings, run_tasks
from qgen_sweep.backends.faults import ENV_VAR as FAULT_ENV
from qgen_sweep.backends.progress import Progress
from qgen_sweep.errors import QGenError, UsageError
from qgen_sweep.plan import PlannedTrial, plan
from qgen_sweep.provenance import provenance
from qgen_sweep.search import strategy_for
from qgen_sweep.spec import SweepSpec, saved_spec
from qgen_sweep.store import ResultsStore, SweepLock, check_results_dir, corrupt_consequence
from qgen_sweep.trial.inputs import check_inputs


@dataclass(frozen=True)
class LaunchOptions:
    """Command-line choices of one launch / resume."""

    results_dir: Path
    address: str | None = None
    max_concurrent: int | None = None  # None = the spec's value
    backend: str = "ray"
    trial_fn: str = DEFAULT_TRIAL_FN
    progress_interval: float = 10.0  # seconds between plain progress lines in a batch log
    bundle_size: int | None = None  # --bundle-size: fused engine with this many members
    loggers: tuple[str, ...] = ()  # --log: opt-in per-epoch loggers ("tensorboard")


def runs_here(backend: str, address: str | None) -> bool:
    """Whether the trials run on this machine (in-process, or a Ray cluster started here)."""
    return backend == "local" or not (address or os.environ.get("RAY_ADDRESS"))


def preflight(spec: SweepSpec, results_dir: Path, backend: str = "ray",
              address: str | None = None, device: bool = True) -> list[PlannedTrial]:
    """Everything a launch checks before it writes or starts anything: every trial (planned and
    validated; an adaptive search's whole space), the dataset and weight files they read, the
    device (`device` and the trials run here) and the results directory. Returns the plan; the
    first problem is a one-line UsageError."""
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    trials = plan(spec)
    check_inputs([t.config for t in trials], spec.runtime,
                 device_here=device and runs_here(backend, address))
    check_results_dir(results_dir)
    return trials


def settings_for(spec: SweepSpec, options: LaunchOptions) -> RunSettings:
    """Scheduling from the spec's resources and the command line."""
    res = spec.resources
    concurrent = res.max_concurrent if options.max_concurrent is None else options.max_concurrent
    if concurrent < 0:
        raise UsageError(f"--max-concurrent must be >= 0 (0 = no limit), but got {concurrent}")
    if res.gpus_per_trial and options.backend == "local":
        raise UsageError(f"resources.gpus_per_trial = {res.gpus_per_trial} runs each trial on "
                         f"several data-parallel workers through Ray; use --backend ray, or set "
                         f"resources.gpus_per_trial = 0")
    return RunSettings(cpu=res.cpu, gpu=res.gpu, max_concurrent=concurrent,
                       max_failures=res.max_failures, address=options.address,
                       gpus_per_trial=res.gpus_per_trial)


def run_sweep(spec: SweepSpec, options: LaunchOptions, command: str,
              stream: TextIO | None = None) -> ResultsStore:
    """Check, lock, run what the sweep still lacks. Returns the store (summarise after)."""
    trials = preflight(spec, options.results_dir, options.backend, options.address)
    settings = settings_for(spec, options)
    search = strategy_for(spec)
    store = ResultsStore(options.results_dir)
    with SweepLock(store.root, command) as lock:
        _check_same_sweep(store, spec)
        progress = Progress(search.total(trials), 0, 0, stream=stream,
                            interval=options.progress_interval)
        quarantine_corrupt(store, progress, reruns=search.reruns_incomplete)
        work = search.open(store, trials, progress, options.bundle_size)
        progress.already_done, progress.to_run = work.done, work.to_run
        if work.to_run <= 0:
            progress.note(work.finished_note)
            return store
        ctx = RunContext(
            store_root=str(store.root.resolve()), sweep=spec.name,
            runtime=dataclasses.asdict(spec.runtime), provenance=provenance(),
            trial_fn=options.trial_fn, fault_file=os.environ.get(FAULT_ENV) or None,
            loggers=options.loggers, lease=lock.token,
        )
        # the running-trials table reads their epoch rows (suggested trials: from plan.parquet)
        progress.watch(store.root, work.source.tasks or ())
        with progress:
            run_tasks(options.backend, work.source, ctx, settings, progress)
        progress.raise_input_error()
    return store


def check_complete(spec: SweepSpec, store: ResultsStore) -> None:
    """Raise (exit 1) with the count and what to do when the sweep lacks some results."""
    problem = strategy_for(spec).incomplete(store)
    if problem is not None:
        raise QGenError(problem)


def _check_same_sweep(store: ResultsStore, spec: SweepSpec) -> None:
    if not store.spec_path.is_file():
        return
    old = saved_spec(store.root)
    if old.spec_hash != spec.spec_hash:
        raise UsageError(
            f"{store.root} holds a different sweep (spec hash {old.spec_hash}, this one "
            f"{spec.spec_hash}); use another --results-dir, or `qgen-sweep resume` to continue "
            f"the saved one")


def quarantine_corrupt(store: ResultsStore, progress: Progress, reruns: bool = True) -> None:
    """Move files that do not read back to <root>/corrupt/, each with a note of what follows
    (`store.corrupt_consequence`; `reruns`: this command runs every incomplete trial again)."""
    for path in store.corrupt_files():
        store.quarantine(path)
        progress.note(f"warning: {path} did not read back; moved to corrupt/: "
                      f"{corrupt_consequence(path, reruns)}")
