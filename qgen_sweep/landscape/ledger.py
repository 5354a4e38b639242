"""Which curves a trial's landscape file already holds, and which it still needs (torch-free:
the driver decides what to run without importing torch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgen_sweep.landscape.schema import FOLDER
from qgen_sweep.landscape.settings import LandscapeSettings, fp32_twin_config
from qgen_sweep.posthoc import JobKind
from qgen_sweep.store import ResultsStore

LANDSCAPE = JobKind(command="landscape", store_kind=FOLDER,
                    job="qgen_sweep.landscape.surface:run_job", verb="compute",
                    done="computed")


def landscape_path(store: ResultsStore, trial_id: str, bits: int) -> Path:
    """<root>/landscape/bits=B/<trial_id>.parquet"""
    return store.path(FOLDER, trial_id, bits)


def present_curves(store: ResultsStore, trial_id: str, bits: int, landscape_id: str) -> set[str]:
    """Kinds of curve the file holds for `landscape_id` (none when it is missing or does not
    read back: then they are computed again; every write is atomic, so only a hand-truncated
    file gets here)."""
    rows = store.rows(FOLDER, trial_id, bits, columns=["landscape_id", "kind"])
    return {row["kind"] for row in rows if row["landscape_id"] == landscape_id}


def twin_id(trial: dict[str, Any]) -> str:
    """The trial id of the FP32 twin of a trials row (itself for an FP32 trial)."""
    from qgen_sweep.trial.config import TrialConfig

    config = json.loads(trial["config_json"])
    return TrialConfig.from_dict(fp32_twin_config(config)).trial_id


def twin_done(store: ResultsStore, fp32_id: str) -> bool:
    """True when the FP32 twin has a final row with status 'done' (a model to interpolate to)."""
    row = store.final_row(fp32_id, 32, columns=["status"])
    return row is not None and row["status"] == "done"


def wanted_curves(store: ResultsStore, trial: dict[str, Any],
                  settings: LandscapeSettings) -> tuple[str, ...]:
    """The curves this trial should have: the twin line only once the FP32 twin is done."""
    curves = settings.curves(int(trial["bits"]))
    if "twin" in curves and not twin_done(store, twin_id(trial)):
        curves = tuple(c for c in curves if c != "twin")
    return curves


def missing_curves(store: ResultsStore, trial: dict[str, Any],
                   settings: LandscapeSettings) -> tuple[str, ...]:
    """The wanted curves the trial's file does not hold yet (empty: nothing to do)."""
    have = present_curves(store, trial["trial_id"], int(trial["bits"]), settings.key())
    return tuple(c for c in wanted_curves(store, trial, settings) if c not in have)


def has_curves(settings: LandscapeSettings):
    """The `is_done` test of the shared post-hoc runner: nothing missing for these settings."""

    def is_done(store: ResultsStore, trial: dict[str, Any]) -> bool:
        return not missing_curves(store, trial, settings)

    return is_done
