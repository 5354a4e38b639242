"""Adaptive search on a real local Ray cluster through Ray Tune's OptunaSearch (real trial
engine on digits, real journal, real Parquet, real `qgen-sweep` subprocesses).

The kill-and-resume test: `qgen-sweep launch smoke-tpe` is SIGKILLed mid-search, `qgen-sweep
resume smoke-tpe` continues the same studies: each ends with the requested number of finished
trials, there is one result row per trial id, and no trial finished before the kill is trained
again.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
from optuna.trial import TrialState
from process_helpers import alive, descendants

from qgen_sweep.adaptive.report import study_rows
from qgen_sweep.adaptive.study import ATTR_TRIAL_ID, open_storage
from qgen_sweep.store import ResultsStore, lock_holder, read_attempts

QGEN = [sys.executable, "-m", "qgen_sweep.cli"]


def _final_rows(store: ResultsStore) -> list[dict]:
    return [pq.read_table(p).to_pylist()[0] for p in store.files("trials")]


def _studies(root: Path) -> list[optuna.Study]:
    storage = open_storage(root)
    return [optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)]


def _kill_mid_search(root: Path, args: list[str], finished: int) -> None:
    driver = subprocess.Popen([*QGEN, "launch", "smoke-tpe", "--results-dir", str(root), *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store = ResultsStore(root)
    try:
        deadline = time.monotonic() + 240
        while len(list(store.files("trials"))) < finished:
            assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, f"no {finished} trials finished in 240 s"
            time.sleep(0.2)
        # status is safe while the search runs. The driver tells the study a result a moment
        # after the worker wrote its row, so give the journal up to a minute to catch up.
        deadline = time.monotonic() + 60
        while True:
            status = subprocess.run([*QGEN, "status", "smoke-tpe", "--results-dir", str(root),
                                     "--json"], capture_output=True, text=True, timeout=120)
            live = json.loads(status.stdout)
            assert live["running"]["command"] == "launch smoke-tpe"
            if sum(r["finished"] for r in live["studies"]) >= 1 or time.monotonic() > deadline:
                break
        assert sum(r["finished"] for r in live["studies"]) >= 1
        tree = descendants(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    deadline = time.monotonic() + 60  # the killed driver's Ray processes go with it
    while alive(tree) and time.monotonic() < deadline:
        time.sleep(0.5)


def test_sigkill_driver_mid_search_then_resume(tmp_path):
    root = tmp_path / "run"
    n_trials = 4  # 2 studies x 4 = 8 finished trials wanted, 2 epochs each
    # Two trials at a time: fewer Ray workers importing torch at once on a 2-core machine.
    _kill_mid_search(root, ["--set", f"optuna.n_trials={n_trials}", "--set", "grid.bits=[2, 32]",
                            "--set", "train.epochs=2", "--set", "resources.max_concurrent=2"],
                     finished=2)
    store = ResultsStore(root)
    assert lock_holder(root) is None
    before = {p: p.stat().st_mtime_ns for p in store.files("trials")}
    finished_before = sum(r["finished"] for r in study_rows(root))
    assert finished_before < 2 * n_trials, "kill the driver mid-search"
    left_running = sum(len(s.get_trials(states=(TrialState.RUNNING,))) for s in _studies(root))
    assert left_running > 0  # the kill left trials open in the journal

    resumed = subprocess.run([*QGEN, "resume", "smoke-tpe", "--results-dir", str(root)],
                             capture_output=True, text=True, timeout=420)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

    studies = _studies(root)
    assert sorted(s.study_name for s in studies) == ["smoke-tpe/bits=2", "smoke-tpe/bits=32"]
    for row in study_rows(root):
        assert (row["finished"], row["requested"], row["running"]) == (n_trials, n_trials, 0)
    rows = _final_rows(store)
    assert set(Counter(r["trial_id"] for r in rows).values()) == {1}  # one row per trial id
    plan_ids = pq.read_table(store.plan_path).column("trial_id").to_pylist()
    assert sorted(plan_ids) == sorted(r["trial_id"] for r in rows)
    for path, mtime in before.items():  # finished before the kill: never trained again
        assert path.stat().st_mtime_ns == mtime
        assert len(read_attempts(store, path.stem)) == 1
    values = {r["trial_id"]: r["test_loss"] for r in rows}
    for study in studies:  # every study trial was told the value its final row holds
        for trial in study.get_trials(states=(TrialState.COMPLETE,)):
            assert trial.value == values[trial.user_attrs[ATTR_TRIAL_ID]]
    assert "adaptive search: minimize test_loss" in resumed.stdout


@pytest.mark.slow
def test_asha_prunes_through_per_epoch_reports(tmp_path):
    """ASHA (Ray's scheduler; OptunaSearch pins Optuna's pruner to NopPruner) sees every epoch's
    test loss; a stopped trial is PRUNED in the study, has no final row and leaves the plan."""
    root = tmp_path / "asha"
    args = ["--set", "grid.bits=[32]", "--set", "train.epochs=6", "--set", "train.milestones=[4]",
            "--set", "optuna.n_trials=8", "--set", "optuna.pruner=\"asha\"",
            "--set", "optuna.grace_epochs=1", "--set", "optuna.reduction_factor=2"]
    done = subprocess.run([*QGEN, "launch", "smoke-tpe", "--results-dir", str(root), *args],
                          capture_output=True, text=True, timeout=420)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (study,) = _studies(root)
    store = ResultsStore(root)
    finals = {r["trial_id"]: r for r in _final_rows(store)}
    plan_ids = set(pq.read_table(store.plan_path).column("trial_id").to_pylist())
    assert plan_ids == set(finals)
    trials = study.get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 8
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    ran = {t.user_attrs[ATTR_TRIAL_ID] for t in complete if t.intermediate_values}
    assert ran
    for trial in complete:
        if trial.intermediate_values:  # every epoch but the last reported to Tune and Optuna
            assert set(trial.intermediate_values) == {1, 2, 3, 4, 5}
        else:  # a reuse of a stored result, or a duplicate that waited on a run
            assert trial.user_attrs[ATTR_TRIAL_ID] in ran
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    stopped = {t.user_attrs[ATTR_TRIAL_ID] for t in pruned if t.intermediate_values}
    for trial in pruned:
        tid = trial.user_attrs[ATTR_TRIAL_ID]
        if trial.intermediate_values:  # stopped by ASHA at a rung, before the last epoch
            assert max(trial.intermediate_values) < 6
            assert trial.value == trial.intermediate_values[max(trial.intermediate_values)]
        else:  # a duplicate suggestion that waited on a run ASHA stopped
            assert tid in stopped
        if tid not in finals:  # unless a later suggestion of it ran to the end
            assert tid not in plan_ids
            assert not store.path("trials", tid, 32).exists()
    # The progress line tells ASHA's stops apart from finished runs.
    last = [ln for ln in done.stdout.splitlines() if ln.startswith("[") and " finished (" in ln][-1]
    ray_stopped = sum(1 for t in pruned if t.intermediate_values)
    if ray_stopped:
        assert f"{ray_stopped} pruned this run" in last, last
    else:
        assert "pruned" not in last, last
