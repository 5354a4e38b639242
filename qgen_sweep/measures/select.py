"""Which trials `qgen-sweep measure` has to measure (torch-free: DuckDB over the store).

A trial is eligible when its final row has status 'done' (a diverged model has no minimum to
measure) and it matches `--where` (qgen_sweep.posthoc.select); it is pending when its measures
file is missing, unreadable or lacks one of the requested families.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qgen_sweep.posthoc import JobKind
from qgen_sweep.posthoc.runner import split_pending
from qgen_sweep.posthoc.select import eligible_trials, no_finished_trials
from qgen_sweep.store import ResultsStore

__all__ = ["MEASURE", "eligible_trials", "has_families", "measured_families",
           "no_finished_trials", "pending_trials"]

MEASURE = JobKind(command="measure", store_kind="measures",
                  job="qgen_sweep.measures.run:run_job", verb="measure", done="measured")


def measured_families(store: ResultsStore, trial_id: str, bits: int) -> set[str]:
    """Families present in a trial's measures file (empty when missing or unreadable)."""
    row = store.row("measures", trial_id, bits, columns=["families"])
    return set(row["families"].split(",")) if row and row["families"] else set()


def has_families(families: Sequence[str]):
    """The `is_done` test of the shared runner: the measures file holds every family."""

    def is_done(store: ResultsStore, trial: dict[str, Any]) -> bool:
        return set(families) <= measured_families(store, trial["trial_id"], trial["bits"])

    return is_done


def pending_trials(
    store: ResultsStore, families: Sequence[str], where: str | None = None
) -> tuple[list[dict[str, Any]], int]:
    """(trials still to measure, number already measured with every requested family)."""
    return split_pending(store, where, has_families(families))
