"""The Optuna journal of an adaptive sweep opens in optuna-dashboard, the Optuna team's own web
UI: a real local search writes `<results>/optuna/journal.log`, a real `optuna-dashboard`
subprocess serves it, and its API lists our studies with their trials."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed "
                                               "(pip install 'qgen-sweep[optuna-dashboard]')")

from qgen_sweep.launcher import LaunchOptions, run_sweep  # noqa: E402
from qgen_sweep.spec import load_spec  # noqa: E402
from qgen_sweep.store import ResultsStore  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read()
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@pytest.mark.slow  # trains two tiny models first (~20 s of CPU with the imports)
def test_optuna_dashboard_opens_the_journal_and_lists_the_studies(tmp_path):
    spec = load_spec("smoke-tpe", ["grid.bits=[4]", "optuna.n_trials=2", "train.epochs=1"])
    root = tmp_path / "run"
    run_sweep(spec, LaunchOptions(results_dir=root, backend="local", progress_interval=0.0),
               f"launch {spec.name}")
    journal = ResultsStore(root).journal_path
    assert journal == root / "optuna" / "journal.log" and journal.is_file()
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    assert exe, "optuna-dashboard installs a console script"
    port = _free_port()
    server = subprocess.Popen([exe, str(journal), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        studies = json.loads(_get(f"http://127.0.0.1:{port}/api/studies"))["study_summaries"]
        assert [s["study_name"] for s in studies] == ["smoke-tpe/bits=4"]
        detail = json.loads(_get(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}"))
        assert [t["state"] for t in detail["trials"]] == ["Complete", "Complete"]
        page = _get(f"http://127.0.0.1:{port}/dashboard").decode()
        assert "<html" in page.lower() and "optuna" in page.lower()
    finally:
        server.terminate()
        server.wait(timeout=30)
