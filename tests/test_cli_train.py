"""`qgen-sweep train` as a real subprocess: outputs, --format json, reuse, exit codes."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXE = Path(sys.executable).with_name("qgen-sweep")
BASE = ["train", "--dataset", "digits", "--bits", "4", "--optimizer", "sgd", "--lr", "0.05",
        "--weight-decay", "1e-4", "--depth", "2", "--width", "2", "--base-width", "8",
        "--milestones", "3", "--threads", "1", "--device", "cpu"]


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "QGEN_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=300, env=env)


def test_train_json_and_out_dir(tmp_path: Path) -> None:
    out = tmp_path / "one"
    proc = _run([*BASE, "--epochs", "4", "--out", str(out), "--format", "json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1  # one JSON object, nothing else on stdout
    result = json.loads(lines[0])
    for key in ("status", "train_acc", "test_acc", "train_loss", "test_loss", "gap", "l2_norm",
                "best_epoch", "trial_id", "step_sizes", "config"):
        assert key in result
    assert result["status"] == "done" and result["epochs_run"] == 4
    assert 0 < result["train_acc"] <= 1 and 0 < result["test_acc"] <= 1
    assert result["gap"] == pytest.approx(result["test_loss"] - result["train_loss"])
    assert result["config"]["bits"] == 4 and result["config"]["milestones"] == [3]

    assert json.loads((out / "result.json").read_text()) == result
    with open(out / "epochs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[3]["lr"]) == pytest.approx(0.005)  # milestone 3, gamma 0.1
    assert {p.name for p in (out / "checkpoints").iterdir()} == {"init.pt", "last.pt", "best.pt"}

    # Rerunning with the same --out reuses the result (--json: the older spelling of --format).
    again = _run([*BASE, "--epochs", "4", "--out", str(out), "--json"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert {k: v for k, v in json.loads(again.stdout).items() if k != "seconds"} == {
        k: v for k, v in result.items() if k != "seconds"
    }
    assert f"reused the result in {out / 'result.json'}" in again.stderr
    assert "epoch " not in again.stderr  # nothing trained
    other = _run([*BASE, "--epochs", "5", "--out", str(out)], tmp_path)
    assert other.returncode == 2 and other.stderr.count("\n") == 1
    assert "holds the result of another configuration" in other.stderr


def test_train_human_output(tmp_path: Path) -> None:
    proc = _run([*BASE, "--bits", "32", "--epochs", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "epoch    2" in proc.stderr  # per-epoch progress on stderr
    assert "status  done" in proc.stdout and "test_acc" in proc.stdout
    # people read percent; result.json and --format json keep fractions
    assert re.search(r"^\s+test_acc  \d+\.\d\d%$", proc.stdout, re.MULTILINE), proc.stdout
    assert re.search(r"test acc \d+\.\d\d%", proc.stderr), proc.stderr
    # milestone 3 of 2 epochs never lowers the learning rate
    assert "warning: milestones 3 are after the last epoch (2)" in proc.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--bits", "3"], "bits must be one of 2, 4, 8, 32, but got 3"),
        (["--optimizer", "lbfgs"], "optimizer must be one of sgd, adam, rmsprop, but got 'lbfgs'"),
        (["--lr", "-0.1"], "lr must be a finite number > 0, but got -0.1"),
        (["--dataset", "cifar10"], "cifar10 data not found"),
        (["--dataset", "imagenet"], "imagenet data not found"),
        (["--dataset", "mnist"], "dataset must be one of"),
        (["--milestones", "5,x"], "milestones must be comma-separated epochs"),
    ],
)
def test_invalid_values_exit_2_with_one_line(
    tmp_path: Path, override: list[str], message: str
) -> None:
    proc = _run([*BASE, "--epochs", "3", *override], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]
    assert proc.stdout == ""


def test_missing_dataset_error_names_the_folder(tmp_path: Path) -> None:
    proc = _run([*BASE, "--epochs", "1", "--dataset", "cifar100"], tmp_path)
    assert proc.returncode == 2
    assert str(tmp_path / "data" / "cifar-100-python") in proc.stderr
    assert "--download" in proc.stderr
