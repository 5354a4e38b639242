"""Damage the store or the checkpoints of a real sweep, then run the real CLI (subprocesses):
a finished trial that lost its epochs file runs again and gets its curve back (one final row),
`status` says so meanwhile; an empty or torn last.pt (single trial or fused bundle) or bundle
result.json is moved aside, named in a failure row, and the trial finishes on the next resume;
`status` and `report` on a store with any damaged result file print one line per file, never a
traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_helpers import run_cli

from qgen_sweep.store import ResultsStore, read_attempts

QGEN = [sys.executable, "-m", "qgen_sweep.cli"]
# One tiny NiN (Int4, SGD, width 4) of the smoke sweep; a second precision for the bundle tests.
ONE = ("--set", "grid.bits=[4]", "--set", 'grid.optimizer=["sgd"]', "--set", "grid.width=[4]")
TWO = ("--set", "grid.bits=[4, 32]", "--set", 'grid.optimizer=["sgd"]', "--set",
       "grid.width=[4]")
KILL_AFTER_EPOCH_1 = {"faults": [{"trial_id": "*", "epoch": 1, "times": 1, "action": "kill"}]}


def qgen(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*QGEN, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "1000", **(env or {})})


@pytest.fixture(autouse=True)
def _wide(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # status lines unwrapped, in-process too


def status_text(root: Path) -> str:
    """`qgen-sweep status` in this process (the same code; the runs themselves are processes)."""
    result = run_cli("status", "smoke", "--results-dir", str(root))
    assert result.code == 0 and not result.crashed, result.stderr
    return result.stdout


def status_json(root: Path) -> dict:
    result = run_cli("status", "smoke", "--results-dir", str(root), "--json")
    assert result.code == 0 and not result.crashed, result.stderr
    return json.loads(result.stdout)


def no_curve_in_plan_view(root: Path) -> list[list]:
    result = run_cli("query", "smoke", "--results-dir", str(root), "--format", "json",
                     "SELECT trial_id, state, epochs_done FROM plan WHERE no_curve")
    assert result.code == 0 and not result.crashed, result.stderr
    return [list(row.values()) for row in json.loads(result.stdout)]


def rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def copy_of(source: Path, target: Path) -> ResultsStore:
    shutil.copytree(source, target)
    return ResultsStore(target)


def only_file(store: ResultsStore, kind: str) -> Path:
    (path,) = store.files(kind)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished one-trial sweep of 2 epochs (local backend)."""
    root = tmp_path_factory.mktemp("finished") / "run"
    result = qgen("launch", "smoke", *ONE, "--set", "train.epochs=2", "--backend", "local",
                  "--results-dir", str(root))
    assert result.returncode == 0, result.stderr
    return root


def _killed(tmp_path_factory, name: str, *extra: str) -> Path:
    """A 3-epoch sweep whose launch was SIGKILLed right after epoch 1's checkpoint."""
    folder = tmp_path_factory.mktemp(name)
    faults = folder / "faults.json"
    faults.write_text(json.dumps(KILL_AFTER_EPOCH_1))
    root = folder / "run"
    result = qgen("launch", "smoke", *extra, "--set", "train.epochs=3", "--backend", "local",
                  "--results-dir", str(root), env={"QGEN_FAULT_INJECTION": str(faults)})
    assert result.returncode == -9, result.stderr  # the fault killed the driver (local backend)
    return root


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    return _killed(tmp_path_factory, "killed", *ONE)


@pytest.fixture(scope="module")
def killed_bundle(tmp_path_factory) -> Path:
    return _killed(tmp_path_factory, "killed_bundle", *TWO, "--bundle-size", "2")


# ---- a finished trial's epochs file
def test_a_damaged_epochs_file_is_rerun_from_the_checkpoint_with_one_final_row(finished,
                                                                              tmp_path):
    store = copy_of(finished, tmp_path / "run")
    curve, final = only_file(store, "epochs"), only_file(store, "trials")
    whole, before = rows(curve), rows(final)[0]
    curve.write_bytes(curve.read_bytes()[:100])

    text = status_text(store.root)
    assert "runs again to write its curve" in text and "no curve: 1 finished trial" in text
    report = status_json(store.root)
    assert report["totals"]["done"] == 1 and report["corrupt"] == [str(curve)]
    (trial_id,) = store.finished_ids()
    assert report["no_curve"] == [{"trial_id": trial_id, "bits": 4}]

    resumed = qgen("resume", "smoke", "--results-dir", str(store.root), "--backend", "local")
    assert resumed.returncode == 0, resumed.stderr
    assert (f"{curve} did not read back; moved to corrupt/: its trial runs again to write its "
            "curve") in resumed.stdout
    assert rows(curve) == whole  # the curve is back, epoch for epoch
    (again,) = (rows(p)[0] for p in store.files("trials"))  # one final row, replaced
    changed = {k for k in before if before[k] != again[k]}
    assert changed <= {"attempts", "finished_at", "git_rev"} and again["attempts"] == 2
    assert read_attempts(store, trial_id)[-1]["first_epoch"] is None  # nothing trained again
    assert (store.root / "corrupt" / curve.relative_to(store.root)).is_file()
    after = status_json(store.root)
    assert after["no_curve"] == [] and after["corrupt"] == [] and after["totals"]["done"] == 1


def test_a_lost_curve_without_a_checkpoint_is_trained_again_from_scratch(finished, tmp_path):
    store = copy_of(finished, tmp_path / "run")
    curve = only_file(store, "epochs")
    whole = rows(curve)
    (trial_id,) = store.finished_ids()
    curve.unlink()  # what a quarantine leaves before the rerun, here with the checkpoints gone
    shutil.rmtree(store.checkpoint_dir(trial_id))
    assert "no curve: 1 finished trial(s)" in status_text(store.root)
    assert status_json(store.root)["no_curve"] == [{"trial_id": trial_id, "bits": 4}]
    assert no_curve_in_plan_view(store.root) == [[trial_id, "done", 0]]

    dry = run_cli("launch", "smoke", *ONE, "--set", "train.epochs=2", "--results-dir",
                  str(store.root), "--dry-run")
    assert "0 already done, 1 would run" in dry.stdout, dry.stdout + dry.stderr
    resumed = qgen("resume", "smoke", "--results-dir", str(store.root), "--backend", "local")
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in rows(curve)] == [1, 2]
    assert [(r["train_loss"], r["test_acc"]) for r in rows(curve)] == \
        [(r["train_loss"], r["test_acc"]) for r in whole]  # seeded: the same curve on the CPU
    assert read_attempts(store, trial_id)[-1]["first_epoch"] == 1
    assert len(list(store.files("trials"))) == 1 and status_json(store.root)["no_curve"] == []
    assert no_curve_in_plan_view(store.root) == []


# ---- unreadable checkpoints
@pytest.mark.parametrize("damage", ["empty", "half"])
def test_an_unreadable_last_pt_restarts_its_trial_on_resume(killed, tmp_path, damage):
    store = copy_of(killed, tmp_path / "run")
    (last,) = store.root.glob("checkpoints/*/last.pt")
    last.write_bytes(b"" if damage == "empty" else last.read_bytes()[: last.stat().st_size // 2])
    resumed = qgen("resume", "smoke", "--results-dir", str(store.root), "--backend", "local")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    (final,) = (rows(p)[0] for p in store.files("trials"))
    assert final["status"] == "done" and final["epochs_run"] == 3
    assert [r["epoch"] for r in rows(only_file(store, "epochs"))] == [1, 2, 3]
    (failure,) = rows(only_file(store, "failures"))
    assert failure["error_type"] == "CheckpointUnreadable"
    assert f"checkpoint {last} does not load" in failure["message"]
    assert "moved to last.pt.unreadable-1, the trial restarts from scratch" in failure["message"]
    assert (last.parent / "last.pt.unreadable-1").is_file() and last.is_file()
    status = status_json(store.root)
    assert status["totals"]["done"] == 1 and status["missing"] == 0 and status["failures"] == []
    again = run_cli("resume", "smoke", "--results-dir", str(store.root), "--backend", "local")
    assert again.code == 0 and "already have results" in again.stdout


def test_an_unreadable_bundle_last_pt_restarts_the_bundle_on_resume(killed_bundle, tmp_path):
    store = copy_of(killed_bundle, tmp_path / "run")
    (last,) = store.root.glob("checkpoints/bundle-*/last.pt")
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    resumed = qgen("resume", "smoke", "--results-dir", str(store.root), "--backend", "local",
                   "--bundle-size", "2")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    finals = [rows(p)[0] for p in store.files("trials")]
    assert [(r["status"], r["epochs_run"], r["engine"]) for r in finals] == [("done", 3,
                                                                              "fused")] * 2
    failures = store.read("failures").to_pylist()
    assert len(failures) == 2 and {f["error_type"] for f in failures} == {"CheckpointUnreadable"}
    assert all("bundle-" in f["message"] and "last.pt.unreadable-1" in f["message"]
               for f in failures)
    assert status_json(store.root)["totals"]["done"] == 2


def test_a_torn_bundle_result_json_is_moved_aside_and_the_member_trains_again(killed_bundle,
                                                                              tmp_path):
    store = copy_of(killed_bundle, tmp_path / "run")
    done = qgen("resume", "smoke", "--results-dir", str(store.root), "--backend", "local",
                "--bundle-size", "2")
    assert done.returncode == 0, done.stderr
    # a kill between a member's result.json and its final row, the result.json torn
    victim = next(iter(store.files("trials")))
    trial_id = victim.stem
    victim.unlink()
    result = store.checkpoint_dir(trial_id) / "result.json"
    result.write_text(result.read_text()[:30])
    resumed = qgen("resume", "smoke", "--results-dir", str(store.root), "--backend", "local",
                   "--bundle-size", "2")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert victim.is_file() and rows(victim)[0]["epochs_run"] == 3
    newest = max(store.root.glob(f"failures/{trial_id}-*.parquet"),
                 key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    failure = rows(newest)[0]
    assert failure["error_type"] == "CheckpointUnreadable" and "result.json" in failure["message"]
    assert (result.parent / "result.json.unreadable-1").is_file()
    assert status_json(store.root)["totals"]["done"] == 2


# ---- status and report on damaged result files
@pytest.mark.parametrize("kind", ["trials", "epochs", "measures", "robustness", "landscape"])
def test_status_and_report_name_a_damaged_file_in_one_line(finished, tmp_path, kind):
    store = copy_of(finished, tmp_path / "run")
    (trial_id,) = store.finished_ids()
    path = store.path(kind, trial_id, 4)
    if not path.exists():  # a post-hoc result: any bytes that are not Parquet
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PAR1 torn by a test")
    lines = [line for line in status_text(store.root).splitlines()
             if line.startswith("corrupt: ")]
    assert len(lines) == 1 and lines[0].startswith(f"corrupt: {path} does not read back; ")
    remedy = {"trials": "its trial has no final row now and runs again",
              "epochs": "its trial runs again to write its curve",
              "measures": "`qgen-sweep measure` computes that trial's measures again",
              "robustness": "`qgen-sweep robustness` evaluates that trial again",
              "landscape": "`qgen-sweep landscape` computes that trial's points again"}[kind]
    assert remedy in lines[0]
    report = qgen("report", "smoke", "--results-dir", str(store.root))
    assert report.returncode == 0, report.stderr
    assert "Traceback" not in report.stderr + report.stdout
    skipped = [line for line in report.stderr.splitlines() if "does not read back" in line]
    if kind != "epochs":  # the report reads the epochs only for its figures
        assert len(skipped) == 1 and str(path) in skipped[0] and remedy in skipped[0]
