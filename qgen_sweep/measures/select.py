"""Which trials `qgen-sweep measure` has to measure (torch-free: DuckDB over the store).

A trial is eligible when its final row has status 'done' (a diverged model has no minimum to
measure) and it matches `--where`; it is pending when its measures file is missing, unreadable or
lacks one of the requested families.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qgen_sweep.errors import StoreError
from qgen_sweep.store import ResultsStore

JOB_COLUMNS = ("trial_id", "bits", "sweep", "dataset", "config_json")


def no_finished_trials(root: Path, sweep: str = "SWEEP") -> StoreError:
    """The error for a results directory with nothing to measure (missing or empty)."""
    return StoreError(f"no finished trials in {root} (run `qgen-sweep launch {sweep} "
                      f"--results-dir {root}` first)")


def eligible_trials(store: ResultsStore, where: str | None = None) -> list[dict[str, Any]]:
    """Finished ('done') trials of `store` matching the SQL condition `where`, by (bits, id).

    `where` runs in the analysis sandbox (qgen_sweep.analysis.sandbox.select_where) as one
    expression over the `trials` view: it can neither read nor write files.
    """
    from qgen_sweep.analysis.db import connect
    from qgen_sweep.analysis.sandbox import select_where

    if next(store.files("trials"), None) is None:
        raise no_finished_trials(store.root)
    con = connect(store.root, kinds=("trials",))
    return select_where(con, "trials", where, JOB_COLUMNS, condition="status = 'done'",
                        order_by="bits, trial_id")


def measured_families(store: ResultsStore, trial_id: str, bits: int) -> set[str]:
    """Families present in a trial's measures file (empty when missing or unreadable)."""
    row = store.row("measures", trial_id, bits, columns=["families"])
    return set(row["families"].split(",")) if row and row["families"] else set()


def pending_trials(
    store: ResultsStore, families: Sequence[str], where: str | None = None
) -> tuple[list[dict[str, Any]], int]:
    """(trials still to measure, number already measured with every requested family)."""
    todo, done = [], 0
    for trial in eligible_trials(store, where):
        if set(families) <= measured_families(store, trial["trial_id"], trial["bits"]):
            done += 1
        else:
            todo.append(trial)
    return todo, done
