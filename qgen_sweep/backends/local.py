"""In-process backend: trials one after another in this process (debugging, fast tests).

Same per-trial work as the Ray backend (runner.run_one), same retry rule (max_failures retries
after the first failed attempt; an input error is not retried and stops the run), no Ray start.
A "kill" fault would kill this process itself.
"""

from __future__ import annotations

from typing import Any

from qgen_sweep.backends import RunContext, RunSettings
from qgen_sweep.backends.progress import Progress
from qgen_sweep.backends.runner import run_or_stop


def run_local(tasks: list[dict[str, Any]], ctx: RunContext, settings: RunSettings,
              progress: Progress) -> None:
    """Run every task to a final row or to its last failed attempt; stop at an input error."""
    for task in tasks:
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
            if "input_error" in summary:
                return
            break
