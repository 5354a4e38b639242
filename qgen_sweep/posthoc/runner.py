"""The driver of post-hoc per-trial jobs, shared by `measure`, `robustness` and `landscape`.

    run = JobRun(kind, sweep, root, settings, where=..., backend="ray", cpu=1, gpu=0)
    run_jobs(run, is_done=lambda store, trial: ..., detail="pacbayes,sharpness")

Under the kind's lock: select the finished trials matching --where, split them into done
(`is_done`, driver-side and torch-free) and to do, run one job per trial to do (one Ray task
each, or in this process one by one), print one line per finished job with an ETA, end with a
summary, and exit 1 naming the failure folder when any job failed. Resumable because every job
writes its result atomically when it finishes: a killed run loses only the jobs in flight.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgen_sweep.backends.progress import JobProgress
from qgen_sweep.errors import QGenError
from qgen_sweep.posthoc.kind import JobKind
from qgen_sweep.spec import SAVED_SPEC, SweepSpec, saved_spec
from qgen_sweep.store import ResultsStore

IsDone = Callable[[ResultsStore, dict[str, Any]], bool]
Echo = Callable[..., None]


@dataclass(frozen=True)
class JobRun:
    """One invocation of a post-hoc command: what, where, and how to run it."""

    kind: JobKind
    sweep: str
    root: Path  # absolute: Ray workers may run elsewhere
    settings: dict[str, Any]  # JSON-able; passed unchanged to every job (plus "threads")
    where: str | None = None
    backend: str = "ray"  # "ray" = one Ray task per trial; "local" = in this process
    address: str | None = None
    cpu: float = 1.0
    gpu: float = 0.0
    as_json: bool = False


def launched_spec(root: Path) -> SweepSpec | None:
    """The spec the results directory was launched with (None when it holds no sweep.toml)."""
    return saved_spec(root) if (Path(root) / SAVED_SPEC).is_file() else None


def task_resources(root: Path, cpu: float | None, gpu: float | None) -> tuple[float, float]:
    """Per-task resources: the flags, else the launched spec's [resources], else 1 CPU."""
    spec = launched_spec(root)
    spec_cpu, spec_gpu = (spec.resources.cpu, spec.resources.gpu) if spec else (1.0, 0.0)
    return (spec_cpu if cpu is None else cpu), (spec_gpu if gpu is None else gpu)


def spec_device(root: Path) -> str:
    """The launched spec's runtime device ("auto" when there is no saved spec)."""
    spec = launched_spec(root)
    return spec.runtime.device if spec else "auto"


def spec_data_dir(root: Path) -> str | None:
    """The launched spec's runtime data_dir (None: $QGEN_DATA_DIR or the default cache)."""
    spec = launched_spec(root)
    return spec.runtime.data_dir if spec else None


def _text(result: dict[str, Any]) -> str:
    """'marked   t0 Int2  0.3 s' (and the failure message) for one finished job."""
    label = "FP32" if result["bits"] == 32 else f"Int{result['bits']}"
    line = f"{result['status']:8s} {result['trial_id']} {label:5s} {result['seconds']:.1f} s"
    return f"{line}  {result['message']}" if result["message"] else line


def split_pending(
    store: ResultsStore, where: str | None, is_done: IsDone
) -> tuple[list[dict[str, Any]], int]:
    """(eligible trials still to do, number of eligible trials already done)."""
    from qgen_sweep.posthoc.select import eligible_trials

    todo, done = [], 0
    for trial in eligible_trials(store, where):
        if is_done(store, trial):
            done += 1
        else:
            todo.append(trial)
    return todo, done


def _run_local(run: JobRun, trials: list[dict[str, Any]], on_result, progress) -> None:
    job = run.kind.job_function()
    for trial in trials:
        progress.on_start(trial["trial_id"])
        on_result(job(str(run.root), trial, run.settings))


def run_jobs(run: JobRun, is_done: IsDone, detail: str = "", echo: Echo | None = None) -> dict:
    """Run the pending jobs of `run` under its kind's lock; return the summary dict.

    Raises ResultsDirError (exit 2) when the results directory is missing or a file, StoreError
    when it has no finished trials (or is locked by the same kind), QGenError (exit 1) after the
    summary when any job failed.
    """
    from qgen_sweep.analysis.db import check_results_dir
    from qgen_sweep.posthoc.select import eligible_trials
    from qgen_sweep.store import SweepLock

    if echo is None:
        import click

        echo = click.echo
    check_results_dir(run.root)  # before the lock, which would create the directory
    eligible_trials(ResultsStore(run.root), run.where)  # a bad --where is refused before the lock
    with SweepLock(run.root, run.kind.command, name=run.kind.lock):
        summary = _run_locked(run, is_done, detail, echo)
    if summary["failed"]:
        kind = run.kind
        raise QGenError(f"{summary['failed']} {kind.command} job(s) failed (rows in "
                        f"{run.root}/{kind.failures}/); fix the cause and rerun "
                        f"`qgen-sweep {kind.command}` to retry them")
    return summary


def _run_locked(run: JobRun, is_done: IsDone, detail: str, echo: Echo) -> dict:
    kind = run.kind
    todo, done = split_pending(ResultsStore(run.root), run.where, is_done)
    if not run.as_json:
        extra = f" ({detail})" if detail else ""
        echo(f"{kind.command} {run.sweep}: {len(todo)} to {kind.verb}, {done} already "
             f"{kind.done}{extra} in {run.root}")
    seen: list[dict[str, Any]] = []
    progress = _progress(run, len(todo), echo)

    def on_result(result: dict[str, Any]) -> None:
        seen.append(result)
        progress.on_done(result["trial_id"], ok=result["status"] != "failed",
                         text=_text(result))

    with progress:
        if todo and run.backend == "local":
            _run_local(run, todo, on_result, progress)
        elif todo:
            from qgen_sweep.backends.ray_tasks import run_trial_jobs

            progress.phase("starting Ray and the first jobs...")
            run_trial_jobs(run.kind.job, run.kind.store_kind, str(run.root), todo, run.settings,
                           run.cpu, run.gpu, run.address, on_result,
                           note=lambda line: echo(line, err=True))
    return _summary(run, seen, done, echo)


def _progress(run: JobRun, total: int, echo: Echo) -> JobProgress:
    """One line per finished job with an ETA; live on a terminal, heartbeats in a log (the
    shared JobProgress); silent with --json or nothing to do."""
    import click

    label = f"{run.kind.command} {run.sweep}"
    if run.as_json or total == 0:
        return JobProgress(total, label, interval=0, echo=lambda text: None)
    return JobProgress(total, label, echo=None if echo is click.echo else echo)


def _summary(run: JobRun, results: list[dict[str, Any]], done: int, echo: Echo) -> dict:
    kind = run.kind
    failed = sum(1 for r in results if r["status"] == "failed")
    summary = {kind.done: len(results) - failed, "failed": failed, f"already_{kind.done}": done,
               "results": results}
    if run.as_json:
        echo(json.dumps(summary, indent=2))
    else:
        echo(f"{kind.done} {len(results) - failed}, failed {failed}, already {kind.done} {done}")
    return summary
