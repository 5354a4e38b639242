"""Shared helpers for the sweep tests: a tiny variant of the smoke sweep, fault files, readers."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from qgen_sweep.launcher import LaunchOptions, run_sweep
from qgen_sweep.plan import plan
from qgen_sweep.spec import load_spec
from qgen_sweep.store import ResultsStore

# 2 optimizers x 2 precisions = 4 trials of 2 epochs on digits (seconds each on 2 cores).
TINY = ("grid.bits=[2, 32]", "grid.width=[4]", "train.epochs=2", "resources.max_failures=1")


def tiny_spec(*extra: str):
    return load_spec("smoke", [*TINY, *extra])


def trial_ids(spec) -> list[str]:
    return [t.trial_id for t in plan(spec)]


def cifar_file_names(root: Path) -> dict[str, str]:
    """Both CIFAR trees' file names under `root`, empty (validate and dry runs check that they
    are there; nothing reads them); returns the environment that points the CLI at them."""
    from qgen_sweep.trial.inputs import CIFAR_FILES

    for folder, train, test, _ in CIFAR_FILES.values():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in [*train, *test]:
            (root / folder / name).write_bytes(b"")
    return {"QGEN_DATA_DIR": str(root)}


def write_faults(path: Path, faults: list[dict]) -> Path:
    path.write_text(json.dumps({"faults": faults}))
    return path


def launch(spec, root: Path, backend: str) -> ResultsStore:
    return run_sweep(spec, LaunchOptions(results_dir=root, backend=backend,
                                         progress_interval=0.0), f"launch {spec.name}")


def final_rows(store: ResultsStore) -> list[dict]:
    """Every final row on disk (one file per trial; duplicates would show as repeated ids)."""
    return [pq.read_table(p).to_pylist()[0] for p in store.files("trials")]


def failure_rows(store: ResultsStore) -> list[dict]:
    table = store.read("failures")
    return [] if table is None else table.to_pylist()
