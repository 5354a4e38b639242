"""In-process backend: tasks one after another in this process (debugging, fast tests).

Same per-trial work as the Ray backend (runner.run_one), same retry rule (max_failures retries
after the first failed attempt; an input error is not retried and stops the run), no Ray start.
Tasks come from the source one at a time, so an adaptive search asks, trains and tells in turn.
A "kill" fault would kill this process itself.
"""

from __future__ import annotations

from typing import Any

from qgen_sweep.backends import FINISHED, RunContext, RunSettings, TaskSource
from qgen_sweep.backends.progress import Progress
from qgen_sweep.backends.runner import run_or_stop


def run(source: TaskSource, ctx: RunContext, settings: RunSettings,
        progress: Progress) -> None:
    """Run every task of `source` to a final row or to its last failed attempt; stop at an
    input error. Nothing runs beside a task here, so a source with none to give is done."""
    if source.pruning is not None:
        progress.note("note: the pruner needs Ray Tune (ASHA); --backend local runs every trial "
                      "to the end")
    while (task := source.next_task()) not in (None, FINISHED):
        summary = _run_with_retries(task, ctx, settings, progress)
        source.on_complete(task, error=summary is None or "input_error" in summary)
        if summary is not None and "input_error" in summary:
            return


def _run_with_retries(task: dict[str, Any], ctx: RunContext, settings: RunSettings,
                      progress: Progress) -> dict[str, Any] | None:
    """The summary of the attempt that finished the task, or None when every attempt failed."""
    trial_id = task["trial_id"]
    for attempt in range(settings.max_failures + 1):
        progress.on_start(trial_id)
        try:
            summary = run_or_stop(task, ctx)
        except Exception as error:  # the failure row is already written by run_one
            reason = f"{type(error).__name__}: {error}"
            if attempt == settings.max_failures:
                progress.on_fail(trial_id, reason)
            else:
                progress.on_retry(trial_id, reason)
            continue
        progress.on_result(trial_id, summary)
        return summary
    return None
