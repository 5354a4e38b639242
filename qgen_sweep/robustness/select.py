"""The `robustness` job kind and its pending test (torch-free: the driver runs it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qgen_sweep.posthoc import JobKind
from qgen_sweep.store import ResultsStore

ROBUSTNESS = JobKind(command="robustness", store_kind="robustness",
                     job="qgen_sweep.robustness.run:run_job", verb="evaluate", done="evaluated")


def evaluated_keys(store: ResultsStore, trial_id: str, bits: int) -> set[tuple[str, str, int]]:
    """(source, corruption, severity) of the rows a trial's robustness file holds."""
    rows = store.rows("robustness", trial_id, bits, columns=["source", "corruption", "severity"])
    return {(r["source"], r["corruption"], r["severity"]) for r in rows}


def has_sets(source: str, corruptions: Sequence[str], severities: Sequence[int]):
    """The `is_done` test: the trial has a row for every requested corruption and severity."""
    wanted = {(source, c, s) for c in corruptions for s in severities}

    def is_done(store: ResultsStore, trial: dict[str, Any]) -> bool:
        return wanted <= evaluated_keys(store, trial["trial_id"], trial["bits"])

    return is_done
