"""The worker side of a post-hoc job: run a kind's work for one trial, never raise for it.

A failing trial becomes one failure row in the kind's failure folder (ResultsStore.record_failure:
<root>/<failures>/<id>-<attempt>.parquet, apart from the trials' own failures, so a measure or
robustness failure never makes a done trial look failed), and the driver goes on with the next
trial; the next run retries it, because its result is still missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from qgen_sweep.backends.faults import POSTHOC, FaultPlan
from qgen_sweep.posthoc.kind import JobKind
from qgen_sweep.store import ResultsStore

Work = Callable[[ResultsStore, dict[str, Any]], object]


def summary(trial: dict[str, Any], status: str, seconds: float, message: str = "") -> dict:
    """What the driver gets back for one job (the progress line and the JSON summary)."""
    return {"trial_id": trial["trial_id"], "bits": trial["bits"], "status": status,
            "seconds": seconds, "message": message}


def run_guarded(kind: JobKind, results_dir: str, trial: dict[str, Any], work: Work) -> dict:
    """Run `work(store, trial)` for one trial; return summary(...) with status kind.done, or
    "failed" after recording the exception as a failure row of `kind.store_kind`."""
    store = ResultsStore(results_dir)
    started = time.perf_counter()
    try:
        work(store, trial)
    except Exception as error:  # noqa: BLE001 - any failure of one trial is a row, not a crash
        store.record_failure(kind.store_kind, trial["trial_id"], trial["bits"], error)
        first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        return summary(trial, "failed", time.perf_counter() - started, first)
    faults = FaultPlan.load(None)  # tests only: e.g. a pause after the result is written
    if faults is not None:
        faults.check(trial["trial_id"], POSTHOC)
    return summary(trial, kind.done, time.perf_counter() - started)
