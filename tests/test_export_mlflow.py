"""`qgen-sweep export --mlflow` into a real MLflow tracking store (SQLite), read back with
MLflow's own client: one run per finished trial with its params, final and per-epoch metrics and
tags; a second export adds only the trials that finished since."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_analysis import VALUES, _trial_row, build_known_store, config

pytest.importorskip("mlflow", reason="the mlflow extra is not installed "
                                     "(pip install 'qgen-sweep[mlflow]')")

EXE = str(Path(sys.executable).with_name("qgen-sweep"))


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return os.environ | {"QGEN_SWEEP_CACHE_DIR": str(tmp_path / "cache")}


def _runs(uri: str, experiment: str) -> dict[str, object]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return {r.data.tags["qgen.trial_id"]: r for r in client.search_runs([exp.experiment_id])}


@pytest.mark.slow  # MLflow's import and its SQLite schema migrations: ~25 s of CPU
def test_export_writes_one_run_per_finished_trial_and_only_new_ones_again(tmp_path, env):
    store = build_known_store(tmp_path / "tiny")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = subprocess.run([EXE, "export", "--results-dir", str(store.root), "--mlflow", uri],
                           capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    # known store: 10 done + 1 diverged finished; the failed and the never-started have no row
    assert "exported 11 trial(s) to MLflow" in first.stdout
    assert "0 were already there" in first.stdout
    runs = _runs(uri, "tiny")
    assert len(runs) == 11
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    c0 = config(0, 8)
    run = runs[c0.trial_id]
    assert run.data.params["optimizer"] == "sgd" and run.data.params["lr"] == "0.1"
    assert run.data.params["bits"] == "8" and run.info.run_name == "Int8 sgd lr=0.1 wd=0.0001 d2 w8"
    train_acc, test_acc, train_loss, test_loss, _ = VALUES[8][0]
    assert run.data.metrics["test_acc"] == pytest.approx(100 * test_acc)  # percent
    assert run.data.metrics["gap"] == pytest.approx(test_loss - train_loss)  # nats
    history = client.get_metric_history(run.info.run_id, "epoch/train_loss")
    assert [(m.step, round(m.value, 6)) for m in history] == \
        [(1, round(train_loss + 0.2, 6)), (2, round(train_loss + 0.1, 6)), (3, train_loss)]
    assert (run.data.tags["qgen.status"], run.data.tags["qgen.precision"]) == ("done", "Int8")
    assert run.info.status == "FINISHED"
    diverged = runs[config(2, 4).trial_id]
    assert diverged.data.tags["qgen.status"] == "diverged" and "gap" not in diverged.data.metrics

    # One more trial finishes; exporting again adds it alone (in-process: same code, no second
    # MLflow import; the SQLite store's schema migrations run once per new store, ~4 s).
    from qgen_sweep.export_mlflow import export, finished_trials

    late = config(0, 32, seed=1)
    store.write_trial(_trial_row(late, "tiny", (0.95, 0.7, 0.05, 0.45, 9.0), 0))
    assert export(finished_trials(store.root, None), uri) == {"exported": 1, "skipped": 11}
    assert set(_runs(uri, "tiny")) == set(runs) | {late.trial_id}
    # --where and --experiment: only the Int2 trials, into an experiment of their own.
    assert export(finished_trials(store.root, "bits = 2"), uri, experiment="int2 only") == \
        {"exported": 2, "skipped": 0}
    assert {r.data.tags["qgen.precision"] for r in _runs(uri, "int2 only").values()} == {"Int2"}


def test_export_refuses_bad_input_before_touching_mlflow(tmp_path, env):
    store = build_known_store(tmp_path / "tiny")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bad = subprocess.run([EXE, "export", "--results-dir", str(store.root), "--mlflow", uri,
                          "--where", "bitz = 2"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--where" in bad.stderr
    none = subprocess.run([EXE, "export", "--results-dir", str(store.root), "--mlflow", uri,
                           "--where", "bits = 3"], capture_output=True, text=True, env=env)
    assert none.returncode == 1 and "no finished trials matching --where" in none.stderr
    assert not (tmp_path / "mlflow.db").exists()
