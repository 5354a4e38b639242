"""A launch refuses what cannot work before it starts anything, and an input error inside a trial
stops the sweep instead of being retried: real `qgen-sweep` subprocesses, real files, real Ray."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from qgen_sweep.trial.inputs import CIFAR_FILES, visible_gpus

QGEN = [sys.executable, "-m", "qgen_sweep.cli"]
# a one-trial cifar10 sweep on the smoke grid's tiny NiN
TINY_CIFAR = ("--set", 'train.dataset="cifar10"', "--set", "grid.bits=[32]",
              "--set", 'grid.optimizer=["sgd"]', "--set", "grid.width=[4]",
              "--set", "train.epochs=1", "--set", "train.batch_size=10")


def _run(*args: str, data: Path | None = None, timeout: float = 120,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "QGEN_DATA_DIR": str(data) if data else "/nonexistent/qgen-data"}
    return subprocess.run([*QGEN, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd)


def _one_error_line(proc: subprocess.CompletedProcess, needle: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert needle in lines[0], lines[0]
    return lines[0]


def write_cifar10(root: Path, per_file: int = 10, garbage: bool = False) -> Path:
    """A tiny CIFAR-10 tree in torchvision's pickle layout (or files that are not pickles)."""
    rng = np.random.default_rng(0)
    folder, train_files, test_files, _ = CIFAR_FILES["cifar10"]
    base = root / folder
    base.mkdir(parents=True)
    for name in [*train_files, *test_files]:
        if garbage:
            (base / name).write_bytes(b"not a pickle")
            continue
        labels = [int(v) for v in rng.integers(0, 10, per_file)]
        images = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        with open(base / name, "wb") as handle:
            pickle.dump({b"data": images, b"labels": labels}, handle)
    return root


# ---- data -----------------------------------------------------------------------------------
def test_launch_without_cifar_data_stops_at_once_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "x"
    start = time.monotonic()
    proc = _run("launch", "cifar10-grid", "--results-dir", str(out), timeout=60)
    line = _one_error_line(proc, "cifar10 data not found")
    assert "/nonexistent/qgen-data/cifar-10-batches-py" in line and "--data-dir" in line
    assert time.monotonic() - start < 30  # no Ray start, no trial
    assert not out.exists()


@pytest.mark.parametrize("command", [("validate", "cifar10-grid"),
                                     ("launch", "cifar100-grid", "--dry-run"),
                                     ("validate", "cifar10-tpe"),
                                     ("launch", "cifar10-tpe", "--dry-run")])
def test_validate_and_dry_run_refuse_missing_data(tmp_path: Path, command: tuple) -> None:
    name = command[1].split("-")[0]
    _one_error_line(_run(*command, cwd=tmp_path), f"{name} data not found")
    assert not any(tmp_path.iterdir())


def test_data_dir_option_points_launch_validate_and_slurm_at_the_data(tmp_path: Path) -> None:
    data = write_cifar10(tmp_path / "data")
    assert _run("validate", "cifar10-grid", "--data-dir", str(data)).returncode == 0
    out = tmp_path / "r"
    proc = _run("launch", "smoke", *TINY_CIFAR, "--backend", "local", "--results-dir", str(out),
                "--data-dir", str(data))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list(out.glob("trials/bits=32/*.parquet"))) == 1
    assert f'data_dir = "{data}"' in (out / "sweep.toml").read_text()
    script = _run("slurm", "smoke", "--data-dir", "/shared/data", "--print",
                  "--results-dir", str(tmp_path / "s"))
    assert script.returncode == 0, script.stderr
    assert "--set 'runtime.data_dir=\"/shared/data\"'" in script.stdout


def test_resume_checks_the_data_and_takes_data_dir(tmp_path: Path) -> None:
    data = write_cifar10(tmp_path / "data")
    out = tmp_path / "r"
    first = _run("launch", "smoke", *TINY_CIFAR, "--set", "train.epochs=2", "--backend", "local",
                 "--results-dir", str(out), data=data)
    assert first.returncode == 0, first.stderr[-2000:]
    for path in out.glob("trials/*/*.parquet"):
        path.unlink()  # as if the trial had not finished
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    moved = tmp_path / "moved"
    (data).rename(moved)
    _one_error_line(_run("resume", "smoke", "--results-dir", str(out), "--backend", "local",
                         data=tmp_path / "gone"), "cifar10 data not found")
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    again = _run("resume", "smoke", "--results-dir", str(out), "--backend", "local",
                 "--data-dir", str(moved), data=tmp_path / "gone")
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(list(out.glob("trials/bits=32/*.parquet"))) == 1


# ---- device ---------------------------------------------------------------------------------
@pytest.mark.skipif(visible_gpus() != 0, reason="this machine has (or may have) a GPU")
@pytest.mark.parametrize("command", [("launch", "smoke"), ("launch", "smoke", "--dry-run"),
                                     ("launch", "smoke", "--backend", "local")])
def test_cuda_without_a_gpu_is_refused_before_anything_runs(tmp_path: Path,
                                                            command: tuple) -> None:
    """(`validate` accepts any cuda device: a spec is checked anywhere, run on a GPU machine.)"""
    out = tmp_path / "r"
    args = [*command, "--set", 'runtime.device="cuda"']
    if command[0] == "launch":
        args += ["--results-dir", str(out)]
    _one_error_line(_run(*args, cwd=tmp_path, timeout=60), "CUDA is not available")
    assert not out.exists()


# ---- results directory ----------------------------------------------------------------------
@pytest.mark.parametrize("dry", [False, True])
def test_results_dir_that_is_a_file_or_under_one_is_refused(tmp_path: Path, dry: bool) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep")
    extra = ["--dry-run"] if dry else []
    _one_error_line(_run("launch", "smoke", "--results-dir", str(afile), *extra),
                    "is a file, not a folder")
    _one_error_line(_run("launch", "smoke", "--results-dir", str(afile / "sub"), *extra),
                    "which is a file")
    assert afile.read_text() == "keep" and sorted(tmp_path.iterdir()) == [afile]


def _lock_folder(folder: Path) -> Callable[[], None]:
    """Make `folder` unwritable for this process and return the undo: read-only permissions, or
    for root (who may write any folder) the immutable attribute, which binds root too."""
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return lambda: folder.chmod(0o700)
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without chattr +i: no folder is unwritable")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_unwritable_results_dir_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    unlock = _lock_folder(locked)
    try:
        _one_error_line(_run("launch", "smoke", "--results-dir", str(locked / "r")),
                        "not writable")
        assert not any(locked.iterdir())
    finally:
        unlock()


# ---- input errors inside a trial ------------------------------------------------------------
@pytest.mark.parametrize("backend", ["local", "ray"])
def test_an_input_error_in_a_trial_is_not_retried_and_stops_the_sweep(tmp_path: Path,
                                                                      backend: str) -> None:
    """Files that are there (the driver's check passes) but are not CIFAR batches: the first
    trial's DataError is recorded once and ends the sweep with one line, exit 2."""
    data = write_cifar10(tmp_path / "data", garbage=True)
    out = tmp_path / "r"
    proc = _run("launch", "smoke", *TINY_CIFAR, "--set", "grid.width=[4, 8]",
                "--set", "grid.optimizer=[\"sgd\", \"adam\"]", "--set", "resources.max_failures=2",
                "--max-concurrent", "1", "--backend", backend, "--results-dir", str(out),
                data=data, timeout=240)
    line = _one_error_line(proc, "is not a CIFAR python batch")
    assert "without retrying" in line and "qgen-sweep resume" in line
    assert "retrying:" not in proc.stdout
    failures = list(out.glob("failures/*.parquet"))
    assert len(failures) == 1, failures  # one attempt of one trial, then the sweep stopped
    assert not list(out.glob("trials/*/*.parquet"))
