"""The in-process backend with the real trial engine on digits: rows, provenance, no reruns,
retries and failure records (the same per-trial code the Ray backend runs)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from sweep_helpers import failure_rows, final_rows, launch, tiny_spec, trial_ids, write_faults

from qgen_sweep.errors import QGenError, UsageError
from qgen_sweep.launcher import check_complete
from qgen_sweep.store import read_attempts


def test_local_launch_writes_rows_with_provenance_and_never_reruns(tmp_path):
    spec = tiny_spec()
    store = launch(spec, tmp_path / "run", backend="local")
    rows = final_rows(store)
    assert sorted(r["trial_id"] for r in rows) == sorted(trial_ids(spec))
    row = rows[0]
    assert row["status"] in ("done", "diverged") and row["engine"] == "single"
    assert row["epochs_run"] == 2 and row["attempts"] == 1 and row["device"] == "cpu"
    assert json.loads(row["config_json"])["epochs"] == 2
    assert json.loads(row["versions_json"])["torch"] and row["host"]
    assert row["started_at"] <= row["finished_at"]
    epochs = pq.read_table(store.path("epochs", row["trial_id"], row["bits"])).to_pylist()
    assert [e["epoch"] for e in epochs] == [1, 2]
    check_complete(spec, store)
    before = {p: p.stat().st_mtime_ns for p in store.files("trials")}
    launch(spec, tmp_path / "run", backend="local")  # everything done: nothing runs again
    assert {p: p.stat().st_mtime_ns for p in store.files("trials")} == before
    assert all(len(read_attempts(store, t)) == 1 for t in trial_ids(spec))


def test_raise_once_retries_raise_always_fails(tmp_path, monkeypatch):
    spec = tiny_spec()
    once, always, *others = trial_ids(spec)
    faults = write_faults(tmp_path / "faults.json", [
        {"trial_id": once, "epoch": 1, "times": 1},
        {"trial_id": always, "epoch": 0, "times": "always"},  # at each attempt's start
    ])
    monkeypatch.setenv("QGEN_FAULT_INJECTION", str(faults))
    store = launch(spec, tmp_path / "run", backend="local")
    by_id = {r["trial_id"]: r for r in final_rows(store)}
    assert set(by_id) == {once, *others}
    assert by_id[once]["attempts"] == 2
    failures = failure_rows(store)
    assert sorted((f["trial_id"], f["attempt"]) for f in failures) == sorted(
        [(once, 1), (always, 1), (always, 2)])
    assert all(f["error_type"] == "InjectedFault" for f in failures)
    assert "injected fault" in failures[0]["message"] and failures[0]["traceback_tail"]
    with pytest.raises(QGenError, match="1 of 4 trials have no result"):
        check_complete(spec, store)


def test_a_different_spec_in_the_same_directory_is_refused(tmp_path):
    launch(tiny_spec("train.epochs=1", "grid.bits=[32]", "grid.optimizer=[\"sgd\"]"),
           tmp_path / "run", backend="local")
    with pytest.raises(UsageError, match="holds a different sweep"):
        launch(tiny_spec(), tmp_path / "run", backend="local")
