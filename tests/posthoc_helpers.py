"""A minimal post-hoc job kind for the runner's tests: writes one marker row per trial (into the
robustness folder, a kind with its own lock and failure folder), and fails for a trial whose id
is listed in the settings."""

from __future__ import annotations

from typing import Any

from qgen_sweep.posthoc import JobKind
from qgen_sweep.posthoc.job import run_guarded
from qgen_sweep.store import ResultsStore

MARK = JobKind(command="mark", store_kind="robustness", job="posthoc_helpers:mark_job",
               verb="mark", done="marked")


def mark_job(results_dir: str, trial: dict[str, Any], settings: dict[str, Any]) -> dict:
    def work(store: ResultsStore, row: dict[str, Any]) -> None:
        if row["trial_id"] in settings.get("fail", ()):
            raise RuntimeError(f"planned failure of {row['trial_id']}")
        store.write_row("robustness", {"trial_id": row["trial_id"], "bits": row["bits"]},
                        MARK_SCHEMA)

    return run_guarded(MARK, results_dir, trial, work)


def is_marked(store: ResultsStore, trial: dict[str, Any]) -> bool:
    return store.has("robustness", trial["trial_id"], trial["bits"])


def _schema():
    import pyarrow as pa

    return pa.schema([("trial_id", pa.string()), ("bits", pa.int32())])


MARK_SCHEMA = _schema()
