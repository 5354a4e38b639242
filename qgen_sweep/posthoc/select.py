"""Which finished trials a post-hoc job runs on (torch-free: DuckDB over the trial rows).

A trial is eligible when its final row has status 'done' (a diverged model has no minimum to
measure or evaluate) and it matches `--where`. The condition runs in the analysis sandbox
(qgen_sweep.analysis.sandbox.select_where) as one expression over the `trials` view: it can
neither read nor write files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgen_sweep.errors import StoreError
from qgen_sweep.store import ResultsStore

# What a job gets of its trial's final row (the clean losses: the robustness gap's baseline).
JOB_COLUMNS = ("trial_id", "bits", "sweep", "dataset", "config_json", "train_loss", "test_loss",
               "test_acc")


def no_finished_trials(root: Path, sweep: str = "SWEEP") -> StoreError:
    """The error for a results directory with nothing to work on (missing or empty)."""
    return StoreError(f"no finished trials in {root} (run `qgen-sweep launch {sweep} "
                      f"--results-dir {root}` first)")


def eligible_trials(store: ResultsStore, where: str | None = None) -> list[dict[str, Any]]:
    """Finished ('done') trials of `store` matching the SQL condition `where`, by (bits, id)."""
    from qgen_sweep.analysis.db import connect
    from qgen_sweep.analysis.sandbox import select_where

    if next(store.files("trials"), None) is None:
        raise no_finished_trials(store.root)
    con = connect(store.root, kinds=("trials",))
    return select_where(con, "trials", where, JOB_COLUMNS, condition="status = 'done'",
                        order_by="bits, trial_id")
