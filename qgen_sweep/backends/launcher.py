"""launch / resume: plan, check, lock the results directory, run what has no final row, summarise.

The store is the ledger: `launch` and `resume` both compute the pending trials as the planned ids
without a readable final row, so a finished trial is never rerun and a launch on a partly finished
sweep simply continues. `resume` reads the resolved spec saved in the results directory, so it
needs none of the original `--set` overrides.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from qgen_sweep.backends import DEFAULT_TRIAL_FN, RunContext, RunSettings
from qgen_sweep.backends.faults import ENV_VAR as FAULT_ENV
from qgen_sweep.backends.progress import Progress
from qgen_sweep.backends.runner import task_of
from qgen_sweep.errors import QGenError, UsageError
from qgen_sweep.plan import PlannedTrial, fusable, interrupted_bundles, plan, plan_bundles
from qgen_sweep.provenance import provenance
from qgen_sweep.spec import SweepSpec, read_spec_text, spec_from_file
from qgen_sweep.store import ResultsStore, SweepLock, check_results_dir, corrupt_consequence
from qgen_sweep.trial.inputs import check_inputs

BACKENDS = ("ray", "local")


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


def default_results_dir(spec: SweepSpec) -> Path:
    """`results_dir` of the spec, else ./runs/<sweep>."""
    return Path(spec.results_dir) if spec.results_dir else Path("runs") / spec.name


def saved_spec(results_dir: Path) -> SweepSpec:
    """The resolved spec a results directory was launched with."""
    path = Path(results_dir) / "sweep.toml"
    if not path.is_file():
        raise UsageError(f"{results_dir} holds no launched sweep (no sweep.toml); run "
                         f"`qgen-sweep launch SWEEP --results-dir {results_dir}` first")
    name = path.parent.name
    return spec_from_file(path, name=_saved_name(path) or name)


def _saved_name(path: Path) -> str | None:
    for line in read_spec_text(path).splitlines():
        if line.startswith("# sweep: "):
            return line.removeprefix("# sweep: ").strip()
    return None


def _check_same_sweep(store: ResultsStore, spec: SweepSpec) -> None:
    if not store.spec_path.is_file():
        return
    old = spec_from_file(store.spec_path, name=spec.name)
    if old.spec_hash != spec.spec_hash:
        raise UsageError(
            f"{store.root} holds a different sweep (spec hash {old.spec_hash}, this one "
            f"{spec.spec_hash}); use another --results-dir, or `qgen-sweep resume` to continue "
            f"the saved one")


def write_plan(store: ResultsStore, spec: SweepSpec, trials: list[PlannedTrial]) -> None:
    """Save plan.parquet, then the resolved spec (each atomically): sweep.toml, which binds the
    directory to this sweep, exists only once its plan is stored."""
    text = f"# sweep: {spec.name}\n# spec hash: {spec.spec_hash}\n{spec.to_toml()}"
    store.write_plan(spec.name, trials)
    store.write_spec(text)


def quarantine_corrupt(store: ResultsStore, progress: Progress, reruns: bool = True) -> None:
    """Move files that do not read back to <root>/corrupt/, each with a note of what follows
    (`store.corrupt_consequence`; `reruns`: this command runs every incomplete trial again)."""
    for path in store.corrupt_files():
        store.quarantine(path)
        progress.note(f"warning: {path} did not read back; moved to corrupt/: "
                      f"{corrupt_consequence(path, reruns)}")


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


def runs_here(backend: str, address: str | None) -> bool:
    """Whether the trials run on this machine (in-process, or a Ray cluster started here)."""
    return backend == "local" or not (address or os.environ.get("RAY_ADDRESS"))


def preflight(spec: SweepSpec, results_dir: Path, backend: str = "ray",
              address: str | None = None, device: bool = True) -> list[PlannedTrial]:
    """Everything a launch checks before it writes or starts anything: every trial (planned and
    validated), the dataset and weight files they read, the device (`device` and the trials run
    here) and the results directory. Returns the plan; the first problem is a one-line
    UsageError."""
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    trials = plan(spec)
    check_inputs([t.config for t in trials], spec.runtime,
                 device_here=device and runs_here(backend, address))
    check_results_dir(results_dir)
    return trials


def run_sweep(spec: SweepSpec, options: LaunchOptions, command: str,
              stream: TextIO | None = None) -> ResultsStore:
    """Plan, lock, run every trial without a final row. Returns the store (summarise after)."""
    trials = preflight(spec, options.results_dir, options.backend, options.address)
    settings = settings_for(spec, options)
    store = ResultsStore(options.results_dir)
    with SweepLock(store.root, command) as lock:
        _check_same_sweep(store, spec)
        write_plan(store, spec, trials)
        progress = Progress(len(trials), 0, 0, stream=stream, interval=options.progress_interval)
        quarantine_corrupt(store, progress)
        done = store.complete_ids()  # a finished trial that lost its epochs file runs again
        pending = [t for t in trials if t.trial_id not in done]
        progress.already_done, progress.to_run = len(trials) - len(pending), len(pending)
        if pending:
            _execute(spec, options, settings, store, pending, progress, lock.token)
        else:
            progress.note(f"all {len(trials)} trials of {spec.name} already have results")
    return store


def _execute(spec: SweepSpec, options: LaunchOptions, settings: RunSettings,
             store: ResultsStore, pending: list[PlannedTrial], progress: Progress,
             lease: str) -> None:
    ctx = RunContext(
        store_root=str(store.root.resolve()), sweep=spec.name,
        runtime=_runtime_dict(spec), provenance=provenance(), trial_fn=options.trial_fn,
        fault_file=os.environ.get(FAULT_ENV) or None, loggers=options.loggers, lease=lease,
    )
    tasks = _tasks(spec, options, pending, progress, store.root / "checkpoints")
    progress.watch(store.root, tasks)  # the running-trials table reads their epoch rows
    with progress:
        if options.backend == "local":
            from qgen_sweep.backends.local import run_local

            run_local(tasks, ctx, settings, progress)
        else:
            from qgen_sweep.backends.ray import run_ray

            run_ray(tasks, ctx, settings, progress)
    progress.raise_input_error()


def _tasks(spec: SweepSpec, options: LaunchOptions, pending: list[PlannedTrial],
           progress: Progress, checkpoints: Path) -> list[dict]:
    """One task per trial, or (engine "fused") one per bundle of unfinished trials of a fusable
    arch; the others stay one task each, with a one-line notice."""
    size = options.bundle_size or spec.resources.bundle_size
    singles = [task_of(t.trial_id, t.config, t.lr_index) for t in pending
               if not fusable(t.config)]
    if spec.resources.engine != "fused" and options.bundle_size is None:
        return [task_of(t.trial_id, t.config, t.lr_index) for t in pending]
    from qgen_sweep.backends.runner import bundle_task_of

    if singles:
        archs = sorted({t.config.arch for t in pending if not fusable(t.config)})
        progress.note(f"fused engine: arch {', '.join(archs)} trains unfused, one trial per "
                      f"task ({len(singles)} trials); bundles are for nin")
    fused = [t for t in pending if fusable(t.config)]
    if not fused:
        return singles
    by_id = {t.trial_id: t for t in fused}
    keep = interrupted_bundles(checkpoints)
    bundles = plan_bundles([t.config for t in fused], size, keep)
    progress.note(f"fused engine: {len(fused)} trials in {len(bundles)} bundles of up to {size}")
    kept = set(keep)
    resumed = sum(1 for b in bundles if tuple(c.trial_id for c in b) in kept)
    if resumed:
        progress.note(f"fused engine: {resumed} interrupted bundle(s) continue from their "
                      "checkpoints with their members as they were")
    return [bundle_task_of([(c.trial_id, c, by_id[c.trial_id].lr_index) for c in b])
            for b in bundles] + singles


def _runtime_dict(spec: SweepSpec) -> dict:
    import dataclasses

    return dataclasses.asdict(spec.runtime)


def check_complete(store: ResultsStore) -> None:
    """Raise (exit 1) with the count when some planned trials have no result."""
    from qgen_sweep.store import sweep_status

    status = sweep_status(store)
    if status.missing:
        total = status.totals["planned"]
        raise QGenError(f"{status.missing} of {total} trials have no result (failed or not run); "
                        f"see `qgen-sweep status`, fix the cause, then `qgen-sweep resume`")


