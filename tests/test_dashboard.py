"""`qgen-sweep dashboard` as a person sees it: a real server subprocess over the known store
(tests/test_analysis.py, hand-computed numbers), a real headless Chromium loading the page.

The page loads with no console errors and nothing from outside 127.0.0.1, every chart renders
(SVG elements in its container, the data it was given), the tables hold the report's numbers,
and the page updates by itself when a trial starts running and when its final row lands.
Screenshots of each state are listed at the end of the test run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from browser_helpers import ARTIFACTS, chromium, console_errors, wait_for
from test_analysis import _trial_row, _write_measures, build_known_store, config

from qgen_sweep.backends.runner import start_attempt
from qgen_sweep.store import ResultsStore, SweepLock

EXE = str(Path(sys.executable).with_name("qgen-sweep"))
CHARTS = ("progress-chart", "gap-chart", "curves-chart", "measures-chart", "parallel-chart")


@pytest.fixture
def store(tmp_path) -> ResultsStore:
    store = build_known_store(tmp_path / "tiny")
    _write_measures(store.root)
    return store


@pytest.fixture
def server(store, tmp_path):
    """`qgen-sweep dashboard --port 0` on the known store; yields its URL."""
    env = os.environ | {"QGEN_SWEEP_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([EXE, "dashboard", "--results-dir", str(store.root), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert " http://127.0.0.1:" in line, line + proc.stderr.read()  # loopback by default
        yield line.split()[3]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _rows(driver, table: str) -> list[list[str]]:
    return driver.execute_script(
        f"return [...document.querySelectorAll('#{table} tbody tr')]"
        ".map(r => [...r.cells].map(c => c.textContent));")


def _shot(driver, tmp_path_factory, name: str) -> Path:
    folder = tmp_path_factory.getbasetemp() / "dashboard-screenshots"
    folder.mkdir(exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    ARTIFACTS.append(str(path))
    return path


def test_the_page_renders_the_store_and_follows_a_running_trial(store, server, tmp_path,
                                                                tmp_path_factory):
    driver = chromium(tmp_path / "profile")
    try:
        driver.get(server)
        wait_for(driver, "window.qgenDashboard.updates >= 1", what="its first state")
        wait_for(driver, "window.qgenDashboard.rendered.curves > 0", what="loss curves")
        rendered = driver.execute_script("return window.qgenDashboard.rendered;")
        # 4 precisions; 10 done trials (Int4 c2 diverged, Int2 c2 failed, one never started)
        assert rendered == {"progress": 4, "table1": 4, "paired": 9, "gap": 10,
                            "measures": 1, "parallel": 10, "curves": 8}
        for chart in CHARTS:  # every chart drew SVG shapes
            shapes = driver.execute_script(
                f"return document.querySelectorAll('#{chart} svg path').length;")
            assert shapes > 5, chart
        table1 = _rows(driver, "table1")
        assert table1[0][:6] == ["FP32", "3", "0", "0", "0", "80.00 ± 10.00"]
        assert table1[3][:5] == ["Int2", "2", "0", "0", "1"]  # n, collapsed, diverged, failed
        paired = _rows(driver, "paired")
        assert paired[0][:3] == ["Int8", "gap (nats)", "3"]
        assert _rows(driver, "measures")[0][:2] == ["pacbayes_init", "1.2000"]
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name);")
        assert resources and all(r.startswith(server) for r in resources)  # offline: no CDN
        assert console_errors(driver) == []
        _shot(driver, tmp_path_factory, "1-loaded")

        # A launch starts the never-started FP32 trial: the page shows it training.
        trial = config(0, 32, seed=1)
        with SweepLock(store.root, "launch tiny"):
            start_attempt(store, SimpleNamespace(lease=None), trial.trial_id)
            store.write_epochs(trial.trial_id, 32, [
                {"epoch": 1, "train_loss": 0.75, "train_acc": 0.5, "test_loss": 0.9,
                 "test_acc": 0.5, "lr": 0.1, "seconds": 1.0}])
            wait_for(driver, "document.getElementById('launch').textContent"
                             ".startsWith('running now: launch tiny')", what="the launch")
            running = _rows(driver, "running-table")
            assert running == [["FP32", "sgd", "0.1", "1/3", "0.750", "50.0", trial.trial_id]]
            _shot(driver, tmp_path_factory, "2-running")
            store.write_trial(_trial_row(trial, "tiny", (0.95, 0.7, 0.05, 0.45, 9.0), 0))
        # ... and its final row lands: Table 1's FP32 row now counts 4 models.
        wait_for(driver, "[...document.querySelectorAll('#table1 tbody tr')][0]"
                         ".cells[1].textContent === '4'", what="the new FP32 row")
        wait_for(driver, "window.qgenDashboard.updates >= 3", what="three states drawn")
        assert _rows(driver, "table1")[0][5] == "83.75 ± 11.09"  # train acc 0.9, 0.8, 0.7, 0.95
        assert driver.execute_script(
            "return document.getElementById('launch').textContent;") == "no launch running"
        assert console_errors(driver) == []
        _shot(driver, tmp_path_factory, "3-updated")
    finally:
        driver.quit()


def test_api_refuses_bad_curves_and_unknown_paths(server, store):
    status, body = _get(server + "api/curves?ids=zz")
    assert status == 400 and "curves take 1 to 12 trial ids of 16 hex digits" in body["error"]
    status, body = _get(server + "static/../../store.py")
    assert status == 404
    status, body = _get(server + "api/version")
    assert status == 200 and len(body["version"]) == 16
    trial = config(0, 8)
    status, body = _get(server + f"api/curves?ids={trial.trial_id}")
    (curve,) = body["curves"]
    assert (curve["precision"], curve["epoch"]) == ("Int8", [1, 2, 3])
    assert curve["train_loss"] == pytest.approx([0.31, 0.21, 0.11])  # final 0.11 + (3 - k) / 10


def test_dashboard_without_results_says_so(tmp_path):
    result = subprocess.run([EXE, "dashboard", "--results-dir", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "does not exist" in result.stderr


@pytest.mark.slow
def test_the_wheel_ships_the_page_and_the_vendored_library_with_its_licenses(tmp_path):
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(repo)], check=True, timeout=600,
                   capture_output=True)
    (wheel,) = tmp_path.glob("qgen_sweep-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    static = "qgen_sweep/dashboard/static/"
    for name in ("index.html", "app.js", "style.css", "favicon.svg",
                 "vendor/echarts/echarts.min.js", "vendor/echarts/LICENSE.txt",
                 "vendor/echarts/NOTICE.txt", "vendor/echarts/licenses/LICENSE-d3"):
        assert static + name in names, name
