"""`qgen-sweep robustness` as a user runs it: real `qgen-sweep` processes (and in-process CLI
calls), a real local Ray cluster, real Parquet files, then the robustness view and `report`."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from cli_helpers import run_cli
from process_helpers import pause_after_each_posthoc_job
from sweep_helpers import launch, tiny_spec
from test_robustness_sources import write_cifar_c

QGEN = [sys.executable, "-m", "qgen_sweep.cli"]
SETS = ["--corruptions", "contrast,gaussian_noise", "--severities", "1-2"]


def qgen(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*QGEN, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 finished digits trials (Int2 and FP32, SGD and Adam)."""
    root = tmp_path_factory.mktemp("robust") / "smoke"
    launch(tiny_spec(), root, "local")
    return root


def _copy(store: Path, dest: Path) -> Path:
    shutil.copytree(store, dest, ignore=shutil.ignore_patterns("robustness*"))
    return dest


def _rows(root: Path) -> list[dict]:
    return [row for p in sorted((root / "robustness").rglob("*.parquet"))
            for row in pq.read_table(p).to_pylist()]


def _keys(rows: list[dict]) -> list[tuple]:
    return sorted((r["trial_id"], r["corruption"], r["severity"]) for r in rows)


def test_ray_run_fills_the_view_and_report_shows_table4_and_the_heatmap(digits: Path,
                                                                        tmp_path: Path) -> None:
    root = _copy(digits, tmp_path / "smoke")
    first = qgen("robustness", "smoke", "--results-dir", str(root), *SETS)
    assert first.returncode == 0, first.stderr
    assert "4 to evaluate, 0 already evaluated (generated: 2 corruptions x 2 severities)" \
        in first.stdout and "ETA" in first.stdout
    rows = _rows(root)
    assert len(rows) == 16 and len(set(_keys(rows))) == 16  # 4 trials x 2 x 2, once each
    trials = {r["trial_id"]: r for p in (root / "trials").rglob("*.parquet")
              for r in pq.read_table(p).to_pylist()}
    for row in rows:
        assert row["gap"] == pytest.approx(row["loss"] - trials[row["trial_id"]]["train_loss"])
        assert row["images"] == 360 and row["source"] == "generated" and 0 <= row["accuracy"] <= 1
    # Same seed, same images: a model's loss under a set does not depend on when it was made.
    more = run_cli("robustness", "smoke", "--results-dir", str(root), "--backend", "local",
                   "--corruptions", "contrast,gaussian_noise", "--severities", "1-3")
    assert more.code == 0, more.stderr
    assert "4 to evaluate, 0 already evaluated" in more.stdout
    again = {(r["trial_id"], r["corruption"], r["severity"]): r for r in _rows(root)}
    assert len(again) == 24 and len(_rows(root)) == 24
    for row in rows:
        kept = again[(row["trial_id"], row["corruption"], row["severity"])]
        assert kept["loss"] == row["loss"] and kept["evaluated_at"] == row["evaluated_at"]
    nothing = run_cli("robustness", "smoke", "--results-dir", str(root), *SETS)  # no Ray start
    assert nothing.code == 0 and "0 to evaluate, 4 already evaluated" in nothing.stdout
    view = run_cli("query", "smoke", "--results-dir", str(root), "--format", "json",
                   "SELECT precision, count(*) AS n FROM robustness GROUP BY ALL ORDER BY 1")
    assert view.code == 0, view.stderr
    assert [(r["precision"], r["n"]) for r in json.loads(view.stdout)] == [("FP32", 12),
                                                                            ("Int2", 12)]
    markdown = run_cli("report", "smoke", "--results-dir", str(root))
    assert markdown.code == 0, markdown.stderr
    assert "Table 4: gap under corruption" in markdown.stdout
    assert "mCE relative to FP32" in markdown.stdout
    report = run_cli("report", "smoke", "--results-dir", str(root), "--format", "json",
                     "--plots", str(tmp_path / "plots"), "--plot-formats", "png")
    assert report.code == 0, report.stderr
    data = json.loads(report.stdout)
    assert str(tmp_path / "plots" / "smoke-robustness_heatmap.png") in data["plots"]
    table4 = data["robustness_table4"]
    assert len(table4) == 6 and {r["n_fp32"] for r in table4} == {2}  # 2 corruptions x 3
    for row in table4:
        assert ("Int2" in row["better"].split(",")) == (row["Int2"] < row["FP32"])
    mce = data["robustness_mce"]
    assert [(r["precision"], r["n_pairs"]) for r in mce] == [("Int2", 2)]
    paired = {r["corruption"]: r for r in data["robustness_paired"]}
    assert set(paired) == {"contrast", "gaussian_noise", "all corruptions"}
    assert paired["contrast"]["ci_low"] <= paired["contrast"]["gap_diff"] <= \
        paired["contrast"]["ci_high"]


def test_a_killed_run_and_a_rerun_leave_one_row_per_set(digits: Path, tmp_path: Path) -> None:
    root = _copy(digits, tmp_path / "smoke")
    sets = ["--corruptions", "contrast,fog,brightness,gaussian_noise", "--severities", "1-5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **pause_after_each_posthoc_job(tmp_path)}
    proc = subprocess.Popen([*QGEN, "robustness", "smoke", "--results-dir", str(root),
                             "--backend", "local", *sets], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not _rows(root) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    before = _rows(root)
    assert 1 <= len(before) < 80, "the run should be killed part-way"
    assert len(set(_keys(before))) == len(before)
    folder = next((root / "robustness").rglob("*.parquet")).parent
    (folder / ".torn.parquet.k1ll3d.tmp").write_bytes(b"half a file")  # what a kill can leave
    again = run_cli("robustness", "smoke", "--results-dir", str(root), "--backend", "local",
                    *sets)
    assert again.code == 0, again.stderr
    after = _rows(root)
    assert len(after) == 80 and len(set(_keys(after))) == 80  # 4 trials x 4 x 5, once each
    finished = {k: r["loss"] for r in before for k in [_keys([r])[0]]}
    for row in after:  # what the killed run finished is kept, not evaluated again
        key = _keys([row])[0]
        if key in finished:
            assert row["loss"] == finished[key]
    assert not list(root.rglob(".*.tmp"))


def _write_cifar10(root: Path, per_file: int = 10) -> tuple[np.ndarray, list[int]]:
    """A tiny CIFAR-10 tree in torchvision's format, learnable (class k: one colour plus noise,
    so the trials do not collapse); returns the test images (N, 32, 32, 3) and labels."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    colours = rng.integers(0, 256, (10, 3, 1, 1))
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        labels = [int(v) for v in rng.permutation(10)[:per_file]]
        noise = rng.integers(-20, 21, (per_file, 3, 32, 32))
        images = np.clip(colours[labels] + noise, 0, 255).astype(np.uint8)
        batch = {b"data": images.reshape(per_file, 3072), b"labels": labels}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
    return images.transpose(0, 2, 3, 1), batch[b"labels"]


def test_released_cifar10c_files_and_a_missing_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    test_images, test_labels = _write_cifar10(data)
    root = tmp_path / "cifar"
    launch(tiny_spec('train.dataset="cifar10"', f'runtime.data_dir="{data}"', "grid.bits=[32]",
                     'grid.optimizer=["sgd"]', "train.epochs=20", "train.batch_size=10",
                     "train.milestones=[15]"), root, "local")  # one FP32 model that learns
    arrays = write_cifar_c(data / "CIFAR-10-C", ("fog",), per_severity=len(test_images))
    arrays["fog"][:len(test_images)] = test_images  # severity 1 = the clean test split
    np.save(data / "CIFAR-10-C" / "fog.npy", arrays["fog"])
    np.save(data / "CIFAR-10-C" / "labels.npy", np.tile(test_labels, 5).astype(np.uint8))
    done = run_cli("robustness", "smoke", "--results-dir", str(root), "--backend", "local",
                   "--source", "released", "--corruptions", "fog", "--severities", "1,2")
    assert done.code == 0, done.stderr
    rows = {(r["trial_id"], r["severity"]): r for r in _rows(root)}
    trials = [r for p in (root / "trials").rglob("*.parquet")
              for r in pq.read_table(p).to_pylist()]
    assert len(rows) == 2 and len(trials) == 1
    for trial in trials:
        clean = rows[(trial["trial_id"], 1)]
        assert clean["layout"] == "cifar-c" and clean["images"] == 10
        assert clean["loss"] == pytest.approx(trial["test_loss"], rel=1e-5)  # the clean split
        assert clean["data_path"] == str(data / "CIFAR-10-C")
    missing = run_cli("robustness", "smoke", "--results-dir", str(root), "--backend", "local",
                      "--source", "released", "--corruptions", "fog,snow")
    assert missing.code == 2 and len(missing.error_lines) == 1
    assert str(data / "CIFAR-10-C" / "snow.npy") in missing.stderr
    assert "CIFAR-10-C on Zenodo" in missing.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--corruptions", "fogg"], "--corruptions takes names"),
        (["--corruptions", "spatter"], "cannot make spatter"),
        (["--severities", "0-6"], "--severities takes severities 1 to 5"),
        (["--source", "released"], "digits has no released corrupted test set"),
        (["--where", "bitz = 2"], "--where must be a SQL condition"),
        (["--eval-batch-size", "0"], "--eval-batch-size must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(digits: Path, args: list[str], needle: str) -> None:
    result = run_cli("robustness", "smoke", "--results-dir", str(digits), "--backend", "local",
                     *args)
    assert result.code == 2, result.stderr
    assert needle in result.stderr and len(result.error_lines) == 1

