"""`qgen-sweep landscape` as a user runs it: real subprocesses, a real local Ray cluster, real
Parquet files, a SIGKILL mid-run, then `qgen-sweep report` over the surfaces."""

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
    shutil.copytree(store, dest, ignore=shutil.ignore_patterns("landscape*"))
    return dest


def _files(root: Path) -> dict[str, os.stat_result]:
    return {p.stem: p.stat() for p in (root / "landscape").rglob("*.parquet")}


@pytest.mark.slow  # a Ray cluster, four landscapes and two reports: ~40 s on a quiet machine
def test_landscape_on_ray_then_report_shows_flatness_kendall_and_the_panel(
        smoke: Path, tmp_path: Path) -> None:
    root = _copy(smoke, tmp_path / "smoke")
    first = qgen("landscape", "smoke", "--results-dir", str(root), "--grid", "5",
                 "--where", "bits = 2")
    assert first.returncode == 0, first.stderr
    assert "2 to compute, 0 already computed (2D, grid 5" in first.stdout
    assert "ETA" in first.stdout and len(_files(root)) == 2
    for path in (root / "landscape").rglob("*.parquet"):
        rows = pq.read_table(path).to_pylist()
        assert {r["bits"] for r in rows} == {2}
        assert {r["kind"] for r in rows} == {"surface", "init", "twin"}
    rest = qgen("landscape", "smoke", "--results-dir", str(root), "--grid", "5", "--backend",
                "local", "--json")
    assert rest.returncode == 0, rest.stderr
    summary = json.loads(rest.stdout)
    assert (summary["computed"], summary["failed"], summary["already_computed"]) == (2, 0, 2)
    nothing = qgen("landscape", "smoke", "--results-dir", str(root), "--grid", "5")
    assert nothing.returncode == 0 and "0 to compute, 4 already computed" in nothing.stdout
    plots = tmp_path / "plots"
    report = qgen("report", "smoke", "--results-dir", str(root), "--plots", str(plots),
                  "--plot-formats", "png,pdf")
    assert report.returncode == 0, report.stderr
    assert "## Loss landscape: flatness per precision" in report.stdout
    assert "## Kendall: landscape flatness vs gap" in report.stdout
    panels = sorted(p.name for p in plots.glob("smoke-landscape-panel-*"))
    assert len(panels) == 2 and {Path(p).suffix for p in panels} == {".png", ".pdf"}
    assert f"figure: {plots / panels[1]}" in report.stdout
    as_json = json.loads(qgen("report", "smoke", "--results-dir", str(root), "--format",
                              "json").stdout)
    flat = {r["measure"]: r for r in as_json["landscape_flatness"]}
    assert flat["loss_rise"]["models"] == 4 and flat["twin_barrier"]["models"] == 2
    assert flat["curvature"]["Int4"] is None and flat["curvature"]["Int2"] is not None
    kendall = {r["measure"]: r for r in as_json["landscape_kendall"]}
    assert kendall["landscape_loss_rise"]["psi_bits"] is not None  # 2 groups of twins
    assert kendall["landscape_loss_rise"]["psi_width"] is None  # width does not vary here


@pytest.mark.slow  # two runs over four 15 x 15 surfaces: ~30 s on a quiet machine
def test_a_killed_landscape_run_resumes_without_recomputing_finished_surfaces(
        smoke: Path, tmp_path: Path) -> None:
    root = _copy(smoke, tmp_path / "smoke")
    args = [*QGEN, "landscape", "smoke", "--results-dir", str(root), "--grid", "15",
            "--backend", "local"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **pause_after_each_posthoc_job(tmp_path)}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not _files(root) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    before = _files(root)
    assert 1 <= len(before) < 4, "the kill should land between the first and the last surface"
    rerun = qgen("landscape", "smoke", "--results-dir", str(root), "--grid", "15", "--backend",
                 "local")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{4 - len(before)} to compute, {len(before)} already computed" in rerun.stdout
    after = _files(root)
    assert len(after) == 4
    for trial_id, stat in before.items():  # finished surfaces were not rewritten
        assert (after[trial_id].st_ino, after[trial_id].st_mtime_ns) == (stat.st_ino,
                                                                         stat.st_mtime_ns)
    assert not list((root / "landscape").rglob("*.tmp"))


def test_a_failed_job_is_a_row_and_the_rerun_retries_it(smoke: Path, tmp_path: Path) -> None:
    root = _copy(smoke, tmp_path / "smoke")
    trials = {p.stem: p for p in (root / "trials").rglob("*.parquet")}
    victim = sorted(trials)[0]
    best = root / "checkpoints" / victim / "best.pt"
    best.rename(best.with_suffix(".away"))
    failed = qgen("landscape", "smoke", "--results-dir", str(root), "--grid", "3", "--backend",
                  "local", "--no-interpolate")
    assert failed.returncode == 1
    assert "1 landscape job(s) failed" in failed.stderr and "landscape_failures" in failed.stderr
    rows = pq.read_table(next((root / "landscape_failures").glob(f"{victim}-1.parquet")))
    assert "best.pt" in rows.column("message")[0].as_py()
    assert len(_files(root)) == 3
    best.with_suffix(".away").rename(best)
    retry = qgen("landscape", "smoke", "--results-dir", str(root), "--grid", "3", "--backend",
                 "local", "--no-interpolate")
    assert retry.returncode == 0, retry.stderr
    assert "1 to compute, 3 already computed" in retry.stdout and len(_files(root)) == 4
    report = qgen("report", "smoke", "--results-dir", str(root), "--format", "json")
    flat = {r["measure"]: r for r in json.loads(report.stdout)["landscape_flatness"]}
    assert flat["curvature"]["models"] == 4 and flat["curvature"]["grid"] == 3
    # No grid point of a 3 x 3 grid lies within radius span / 2 but the centre; no lines ran.
    assert flat["loss_rise"]["models"] == 0 and flat["init_barrier"]["models"] == 0


@pytest.mark.parametrize(("args", "message"), [
    (["--grid", "20"], "--grid must be an odd integer >= 3"),
    (["--span", "0"], "--span must be > 0"),
    (["--where", "bits = = 2"], "--where"),
])
def test_bad_input_is_one_line_with_exit_2(smoke: Path, args: list[str], message: str) -> None:
    result = qgen("landscape", "smoke", "--results-dir", str(smoke), "--backend", "local", *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
