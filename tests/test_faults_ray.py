"""Fault scenarios of a sweep on a real local Ray cluster, real trial engine, real files.

(1) SIGKILL of the driver mid-sweep, then resume: every planned trial has exactly one final row.
(2) a trial raising once is retried and finishes; one raising every time ends as failure records
    while the others finish.
(3) a trial whose process is killed during training continues from its checkpoint.
(4) a truncated Parquet file is reported by `status` and rerun by `resume`.
Plus: a second launch on a directory in use is refused. (5), malformed specs, is in test_spec.py.
One Ray cluster is shared by the in-process launches of this module; (1) starts its own in the
killed `qgen-sweep launch` subprocess.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from process_helpers import alive, descendants
from sweep_helpers import failure_rows, final_rows, tiny_spec, trial_ids, write_faults

from qgen_sweep.errors import QGenError, StoreError
from qgen_sweep.launcher import LaunchOptions, check_complete, run_sweep
from qgen_sweep.spec import saved_spec
from qgen_sweep.store import ResultsStore, SweepLock, lock_holder, read_attempts

QGEN = [sys.executable, "-m", "qgen_sweep.cli"]


@pytest.fixture(scope="module")
def ray_cluster():
    from qgen_sweep.backends.ray import init_ray

    init_ray(None)
    yield
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def faulty_run(ray_cluster, tmp_path_factory):
    """One Ray launch of 4 trials (3 epochs): A raises once, B always, C is killed at epoch 2.

    The spec asks for a GPU fraction, which this CPU-only cluster cannot give: one warning.
    """
    root = tmp_path_factory.mktemp("faulty")
    spec = tiny_spec("train.epochs=3", "resources.gpu=0.25")
    a, b, c, d = trial_ids(spec)
    faults = write_faults(root / "faults.json", [
        {"trial_id": a, "epoch": 1, "times": 1, "action": "raise"},
        {"trial_id": b, "epoch": 0, "times": "always", "action": "raise"},
        {"trial_id": c, "epoch": 2, "times": 1, "action": "kill"},
    ])
    os.environ["QGEN_FAULT_INJECTION"] = str(faults)
    log = io.StringIO()
    try:
        store = run_sweep(spec, LaunchOptions(results_dir=root / "run", progress_interval=0),
                          "launch smoke", stream=log)
    finally:
        del os.environ["QGEN_FAULT_INJECTION"]
    return store, spec, (a, b, c, d), log.getvalue()


def test_raise_once_is_retried_and_finishes(faulty_run):
    store, _, (a, _, _, _), _ = faulty_run
    row = {r["trial_id"]: r for r in final_rows(store)}[a]
    assert row["attempts"] == 2 and row["epochs_run"] == 3
    failures = [f for f in failure_rows(store) if f["trial_id"] == a]
    assert [(f["attempt"], f["error_type"]) for f in failures] == [(1, "InjectedFault")]


def test_raise_always_is_a_failure_record_and_the_sweep_goes_on(faulty_run):
    store, spec, (a, b, c, d), _ = faulty_run
    assert sorted(r["trial_id"] for r in final_rows(store)) == sorted([a, c, d])
    failures = sorted((f["attempt"], f["error_type"]) for f in failure_rows(store)
                      if f["trial_id"] == b)
    assert failures == [(1, "InjectedFault"), (2, "InjectedFault")]  # max_failures = 1
    record = [f for f in failure_rows(store) if f["trial_id"] == b][0]
    assert "injected fault" in record["message"] and record["host"]
    assert "InjectedFault" in record["traceback_tail"]
    with pytest.raises(QGenError, match="1 of 4 trials have no result"):
        check_complete(spec, store)


def test_no_gpus_in_the_cluster_runs_on_cpus_with_one_warning(faulty_run):
    store, _, _, log = faulty_run
    warnings = [line for line in log.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "no GPUs" in warnings[0]
    assert {r["device"] for r in final_rows(store)} == {"cpu"}
    assert "trial " in log and "failed: InjectedFault" in log  # B's final failure, one line


def test_killed_trial_continues_from_its_checkpoint(faulty_run):
    store, _, (_, _, c, _), _ = faulty_run
    row = {r["trial_id"]: r for r in final_rows(store)}[c]
    assert row["attempts"] == 2 and row["epochs_run"] == 3
    attempts = read_attempts(store, c)
    # attempt 1 trained epochs 1-2 and died after epoch 2's checkpoint; attempt 2 started at 3
    assert [(x["attempt"], x["first_epoch"]) for x in attempts] == [(1, 1), (2, 3)]
    died = [f for f in failure_rows(store) if f["trial_id"] == c]
    assert [(f["attempt"], f["error_type"]) for f in died] == [(1, "WorkerDied")]
    epochs = store.read("epochs").to_pylist()
    assert sorted(e["epoch"] for e in epochs if e["trial_id"] == c) == [1, 2, 3]


def test_killed_bundle_continues_from_its_checkpoint_with_every_member(ray_cluster, tmp_path):
    """A fused bundle of all 4 trials; one member's fault SIGKILLs the worker after epoch 2.
    Ray retries the bundle, which continues at epoch 3 for every member; each member has a
    WorkerDied failure row for attempt 1 and one final row."""
    spec = tiny_spec("train.epochs=3")
    ids = trial_ids(spec)
    faults = write_faults(tmp_path / "faults.json",
                          [{"trial_id": ids[1], "epoch": 2, "times": 1, "action": "kill"}])
    os.environ["QGEN_FAULT_INJECTION"] = str(faults)
    try:
        store = run_sweep(spec, LaunchOptions(results_dir=tmp_path / "run", bundle_size=4,
                                              progress_interval=0), "launch smoke",
                          stream=io.StringIO())
    finally:
        del os.environ["QGEN_FAULT_INJECTION"]
    rows = {r["trial_id"]: r for r in final_rows(store)}
    assert sorted(rows) == sorted(ids)
    assert len({r["bundle_id"] for r in rows.values()}) == 1
    died = sorted((f["trial_id"], f["attempt"], f["error_type"]) for f in failure_rows(store))
    assert died == sorted((tid, 1, "WorkerDied") for tid in ids)
    for tid in ids:
        assert rows[tid]["attempts"] == 2 and rows[tid]["epochs_run"] == 3
        attempts = read_attempts(store, tid)
        assert [(x["attempt"], x["first_epoch"]) for x in attempts] == [(1, 1), (2, 3)]


def test_truncated_parquet_is_reported_by_status_and_rerun_by_resume(faulty_run, tmp_path):
    source, spec, (a, b, c, d), _ = faulty_run
    root = tmp_path / "run"
    shutil.copytree(source.root, root, ignore=shutil.ignore_patterns("ray"))
    store = ResultsStore(root)
    victim = store.path("trials", d, spec_bits(spec, d))
    victim.write_bytes(victim.read_bytes()[:100])
    status = _cli("status", "smoke", "--results-dir", str(root), "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["corrupt"] == [str(victim)]
    assert report["totals"]["done"] + report["totals"]["diverged"] == 2  # a and c
    text = _cli("status", "smoke", "--results-dir", str(root)).stdout
    assert "corrupt" in text and str(victim) in text.replace("\n", "")
    resumed = run_sweep(saved_spec(root), LaunchOptions(results_dir=root, progress_interval=0),
                        "resume smoke")
    check_complete(spec, resumed)  # b has no fault file now, d reran: all 4 done
    assert Counter(r["trial_id"] for r in final_rows(store)) == Counter([a, b, c, d])
    assert store.corrupt_files() == [] and (root / "corrupt").is_dir()
    # d had all its epochs checkpointed: the rerun only re-evaluated it, training nothing
    assert read_attempts(store, d)[-1]["first_epoch"] is None


def spec_bits(spec, trial_id: str) -> int:
    from qgen_sweep.plan import plan

    return next(t.config.bits for t in plan(spec) if t.trial_id == trial_id)


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*QGEN, *args], capture_output=True, text=True, timeout=timeout)


def test_sigkill_driver_mid_sweep_then_resume(ray_cluster, tmp_path):
    root = tmp_path / "run"
    args = ["launch", "smoke", "--results-dir", str(root), "--set", "train.epochs=2",
            "--set", "grid.width=[4]"]  # 8 trials
    driver = subprocess.Popen([*QGEN, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store = ResultsStore(root)
    try:
        deadline = time.monotonic() + 240
        while len(list(store.files("trials"))) < 2:
            assert driver.poll() is None, driver.stderr.read().decode()
            assert time.monotonic() < deadline, "no trial finished in 240 s"
            time.sleep(0.2)
        with pytest.raises(StoreError, match="is locked by launch smoke"):
            run_sweep(saved_spec(root), LaunchOptions(results_dir=root), "resume smoke")
        tree = descendants(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    finished_before = {p: p.stat().st_mtime_ns for p in store.files("trials")}
    assert 2 <= len(finished_before) < 8, "kill the driver mid-sweep"
    deadline = time.monotonic() + 60  # the killed driver's Ray workers go with it
    while alive(tree) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not alive(tree), "Ray workers of the killed driver still run"
    assert lock_holder(root) is None
    status = _cli("status", "smoke", "--results-dir", str(root), "--json")
    assert json.loads(status.stdout)["missing"] == 8 - len(list(store.files("trials")))
    finished_before = {p: p.stat().st_mtime_ns for p in store.files("trials")}
    resumed = run_sweep(saved_spec(root), LaunchOptions(results_dir=root, progress_interval=0),
                        "resume smoke")
    spec = saved_spec(root)
    check_complete(spec, resumed)
    assert Counter(r["trial_id"] for r in final_rows(store)) == Counter(trial_ids(spec))
    assert len(trial_ids(spec)) == 8
    for path, mtime in finished_before.items():  # finished trials were not rerun
        assert path.stat().st_mtime_ns == mtime
    torn = [p for folder in SweepLock.OWNED["sweep"] for p in (root / folder).rglob(".*.tmp")]
    assert not torn, f"temporary files of the killed driver's writers survived resume: {torn}"
