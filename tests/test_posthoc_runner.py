"""The shared driver of post-hoc per-trial jobs (qgen_sweep.posthoc), on a real store of trial
rows with a minimal job kind (tests/posthoc_helpers.py); measure and robustness test it end to end
through their CLIs."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from posthoc_helpers import MARK, is_marked

from qgen_sweep.backends.progress import JobProgress
from qgen_sweep.errors import QGenError, ResultsDirError, StoreError, UsageError
from qgen_sweep.posthoc.runner import JobRun, run_jobs
from qgen_sweep.store import ResultsStore, SweepLock


def _store(root: Path) -> ResultsStore:
    store = ResultsStore(root)
    for i, (bits, status) in enumerate([(2, "done"), (32, "done"), (4, "diverged"), (8, "done")]):
        store.write_trial({"trial_id": f"t{i}", "bits": bits, "status": status, "sweep": "s",
                           "dataset": "digits", "config_json": "{}", "train_loss": 0.1})
    return store


def _run(root: Path, **kw) -> JobRun:
    return JobRun(kind=MARK, sweep="s", root=root, settings=kw.pop("settings", {}),
                  backend="local", **kw)


def test_runs_the_pending_done_trials_and_skips_the_rest(tmp_path: Path) -> None:
    store = _store(tmp_path)
    lines: list[str] = []
    summary = run_jobs(_run(tmp_path, where="bits <> 8"), is_marked, detail="x",
                       echo=lambda line, err=False: lines.append(line))
    assert lines[0] == f"mark s: 2 to mark, 0 already marked (x) in {tmp_path}"
    assert lines[1].startswith("[1/2] marked   t0 Int2") and "ETA --" in lines[1]
    assert lines[2].startswith("[2/2] marked   t1 FP32") and "ETA 0:00" in lines[2]
    assert lines[-1] == "marked 2, failed 0, already marked 0"
    assert (summary["marked"], summary["failed"], summary["already_marked"]) == (2, 0, 0)
    assert not (tmp_path / "robustness" / "bits=4").exists()  # diverged: not eligible
    again = run_jobs(_run(tmp_path, as_json=True), is_marked, echo=lines.append)
    assert json.loads(lines[-1])["already_marked"] == 2 and again["marked"] == 1
    assert store.root.joinpath("robustness", "bits=8", "t3.parquet").is_file()


def test_a_failure_is_a_row_the_others_go_on_and_a_rerun_retries(tmp_path: Path) -> None:
    _store(tmp_path)
    out: list[str] = []
    with pytest.raises(QGenError, match=r"1 mark job\(s\) failed .*robustness_failures"):
        run_jobs(_run(tmp_path, settings={"fail": ["t1"]}), is_marked, echo=out.append)
    assert "planned failure of t1" in out[3] and out[-1] == "marked 2, failed 1, already marked 0"
    row = pq.read_table(tmp_path / "robustness_failures" / "t1-1.parquet").to_pylist()[0]
    assert (row["attempt"], row["error_type"], row["bits"]) == (1, "RuntimeError", 32)
    retry = run_jobs(_run(tmp_path), is_marked, echo=out.append)
    assert (retry["marked"], retry["already_marked"]) == (1, 2)


def test_lock_where_and_missing_store_errors(tmp_path: Path) -> None:
    with pytest.raises(ResultsDirError, match="does not exist"):
        run_jobs(_run(tmp_path / "none"), is_marked, echo=print)
    _store(tmp_path)
    with pytest.raises(UsageError, match="--where must be a SQL condition"):
        run_jobs(_run(tmp_path, where="bitz = 2"), is_marked, echo=print)
    with (SweepLock(tmp_path, "robustness", name="robustness"),
          pytest.raises(StoreError, match="is locked by robustness")):
        run_jobs(_run(tmp_path), is_marked, echo=print)
    with SweepLock(tmp_path, "measure", name="measure"):  # another kind's lock: no conflict
        assert run_jobs(_run(tmp_path), is_marked, echo=lambda *a, **k: None)["marked"] == 3


def test_eta_is_the_rate_since_the_first_finished_job() -> None:
    now = [0.0]
    lines: list[str] = []
    progress = JobProgress(5, "mark s", clock=lambda: now[0], echo=lines.append)
    assert progress.eta() == "--"
    now[0] = 100.0  # the first job also paid for start-up: not counted in the rate
    progress.on_done("t0")
    assert progress.eta() == "--"
    now[0] = 110.0
    progress.on_done("t1")  # 1 job in 10 s since the first: 3 left -> 30 s
    assert progress.eta() == "0:30"
    assert lines == ["[1/5] t0 | ETA --", "[2/5] t1 | ETA 0:30"]
