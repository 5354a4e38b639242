"""`qgen-sweep measure` as a user runs it: real subprocesses, a real local Ray cluster, real
Parquet files, then `qgen-sweep report` over them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from process_helpers import pause_after_each_posthoc_job

QGEN = [sys.executable, "-m", "qgen_sweep.cli"]
# Small search settings keep each job to seconds on 2 cores; the defaults are science.md's.
SMALL = ["--iterations", "3", "--mc-samples", "2", "--restarts", "2", "--ascent-steps", "2"]


def qgen(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*QGEN, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 finished smoke trials: Int2 and FP32, SGD and Adam, width 4."""
    root = tmp_path_factory.mktemp("cli") / "smoke"
    done = qgen("launch", "smoke", "--results-dir", str(root), "--backend", "local",
                "--set", "grid.width=[4]", "--set", "grid.bits=[2,32]")
    assert done.returncode == 0, done.stderr
    return root


def _copy(store: Path, dest: Path) -> Path:
    shutil.copytree(store, dest, ignore=shutil.ignore_patterns("measures", "measure_failures"))
    return dest


def _measured(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "measures").rglob("*.parquet"))


def test_measure_on_ray_then_report_shows_table3_and_kendall(smoke: Path, tmp_path: Path) -> None:
    root = _copy(smoke, tmp_path / "smoke")
    first = qgen("measure", "smoke", "--results-dir", str(root), "--where", "bits = 2", *SMALL)
    assert first.returncode == 0, first.stderr
    assert "2 to measure, 0 already measured" in first.stdout
    lines = first.stdout.splitlines()  # a log (a pipe): one line per job with the ETA
    assert any(" starting Ray and the first jobs... measure smoke: 0/2 " in ln for ln in lines)
    jobs = [ln for ln in lines if ln.startswith(("[1/2] ", "[2/2] "))]
    assert [ln.split()[1] for ln in jobs] == ["measured", "measured"]
    assert jobs[0].endswith("| ETA --") and jobs[1].endswith("| ETA 0:00")
    assert len(_measured(root)) == 2
    files = (root / "measures").rglob("*.parquet")
    assert {pq.read_table(p).column("bits")[0].as_py() for p in files} == {2}
    # The rest in-process (one Ray start per test is enough on 2 cores).
    rest = qgen("measure", "smoke", "--results-dir", str(root), "--backend", "local", *SMALL,
                "--json")
    assert rest.returncode == 0, rest.stderr
    summary = json.loads(rest.stdout)
    assert (summary["measured"], summary["failed"], summary["already_measured"]) == (2, 0, 2)
    nothing = qgen("measure", "smoke", "--results-dir", str(root), *SMALL)  # starts no Ray
    assert nothing.returncode == 0 and "0 to measure, 4 already measured" in nothing.stdout
    report = qgen("report", "smoke", "--results-dir", str(root))
    assert report.returncode == 0, report.stderr
    assert "Table 3" in report.stdout and "Kendall" in report.stdout
    as_json = json.loads(qgen("report", "smoke", "--results-dir", str(root), "--format",
                              "json").stdout)
    table3 = {row["measure"]: row for row in as_json["table3"]}
    assert set(table3) >= {"pacbayes_init", "sharpness_mag_orig"}
    assert table3["pacbayes_orig"]["models"] == 4
    assert table3["pacbayes_orig"]["lowest"] in ("FP32", "Int2")
    assert table3["pacbayes_orig"]["Int4"] is None
    kendall = {row["measure"]: row for row in as_json["kendall"]}
    # Bits and optimizer vary in this store: each has 2 groups of 2 models, so psi is defined.
    assert kendall["pacbayes_init"]["psi_bits"] is not None
    assert kendall["pacbayes_init"]["psi_width"] is None  # width does not vary here


def test_failures_are_rows_and_a_rerun_retries_them(smoke: Path, tmp_path: Path) -> None:
    root = _copy(smoke, tmp_path / "smoke")
    victim = sorted(p.name for p in (root / "checkpoints").iterdir())[0]
    best = root / "checkpoints" / victim / "best.pt"
    best.rename(best.with_suffix(".moved"))
    failed = qgen("measure", "smoke", "--results-dir", str(root), "--backend", "local",
                  "--only", "pacbayes", *SMALL)
    assert failed.returncode == 1
    assert "1 measure job(s) failed" in failed.stderr and "error:" in failed.stderr
    assert victim not in _measured(root) and len(_measured(root)) == 3
    rows = pq.read_table(root / "measure_failures" / f"{victim}-1.parquet").to_pylist()
    assert "best.pt" in rows[0]["message"]
    best.with_suffix(".moved").rename(best)
    retry = qgen("measure", "smoke", "--results-dir", str(root), "--backend", "local",
                 "--only", "pacbayes", *SMALL)
    assert retry.returncode == 0, retry.stderr
    assert "1 to measure, 3 already measured" in retry.stdout
    assert victim in _measured(root)


def test_a_killed_run_continues_where_it_stopped(smoke: Path, tmp_path: Path) -> None:
    root = _copy(smoke, tmp_path / "smoke")
    env = {**os.environ, "OMP_NUM_THREADS": "1", **pause_after_each_posthoc_job(tmp_path)}
    proc = subprocess.Popen(
        [*QGEN, "measure", "smoke", "--results-dir", str(root), "--backend", "local",
         "--only", "pacbayes", *SMALL], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not _measured(root) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    first = _measured(root)
    assert 1 <= len(first) < 4, "the run should be killed part-way"
    stamps = {p.stem: p.stat().st_mtime_ns for p in (root / "measures").rglob("*.parquet")}
    # What a kill during a write leaves (the kill above may or may not have hit one).
    folder = next((root / "measures").rglob("*.parquet")).parent
    (folder / ".torn.parquet.k1ll3d.tmp").write_bytes(b"half a file")
    again = qgen("measure", "smoke", "--results-dir", str(root), "--backend", "local",
                 "--only", "pacbayes", *SMALL)
    assert again.returncode == 0, again.stderr
    assert f"{4 - len(first)} to measure, {len(first)} already measured" in again.stdout
    assert len(_measured(root)) == 4
    for path in (root / "measures").rglob("*.parquet"):
        if path.stem in stamps:
            assert path.stat().st_mtime_ns == stamps[path.stem]  # finished work is not redone
    assert not list(root.rglob(".*.tmp"))  # no torn temporary files left visible


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--only", "flatness"], "--only takes a comma-separated subset"),
        (["--where", "bitz = 2"], "--where must be a SQL condition"),
        (["--mc-samples", "0"], "mc_samples must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(smoke: Path, args: list[str], needle: str) -> None:
    result = qgen("measure", "smoke", "--results-dir", str(smoke), "--backend", "local", *args)
    assert result.returncode == 2
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_results_dir_is_bad_input(tmp_path: Path) -> None:
    result = qgen("measure", "smoke", "--results-dir", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and len(result.stderr.strip().splitlines()) == 1
