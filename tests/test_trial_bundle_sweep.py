"""Fused bundles inside a sweep: `qgen-sweep launch --bundle-size K` on a real local
Ray cluster writes one final row per trial, as an unfused run would, plus engine / bundle_id."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import TINY, final_rows, launch, tiny_spec, trial_ids

from qgen_sweep.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]
METRICS = ("train_loss", "test_loss", "train_acc", "test_acc", "gap", "l2_norm")


def qgen(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run([sys.executable, "-m", "qgen_sweep.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


FLOAT64 = 'runtime.dtype="float64"'  # both runs in float64: rows equal to 1e-6


def test_fused_smoke_sweep_on_ray_matches_the_unfused_rows(tmp_path):
    sets = [arg for item in (*TINY, FLOAT64) for arg in ("--set", item)]
    run = qgen("launch", "smoke", *sets, "--bundle-size", "3", "--results-dir",
               str(tmp_path / "fused"))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "fused engine: 4 trials in 2 bundles of up to 3" in run.stdout
    spec = tiny_spec(FLOAT64)
    fused = {r["trial_id"]: r for r in final_rows(ResultsStore(tmp_path / "fused"))}
    assert sorted(fused) == sorted(trial_ids(spec))  # every trial exactly once
    assert {r["engine"] for r in fused.values()} == {"fused"}
    assert len({r["bundle_id"] for r in fused.values()}) == 2
    single = {r["trial_id"]: r for r in final_rows(launch(spec, tmp_path / "single", "local"))}
    for trial_id, row in single.items():
        assert row["engine"] == "single" and row["bundle_id"] is None
        for name in METRICS:
            assert fused[trial_id][name] == pytest.approx(row[name], rel=0, abs=1e-6), name
        assert fused[trial_id]["status"] == row["status"]
        assert fused[trial_id]["step_size_layers"] == row["step_size_layers"]
    # A second launch finds every trial done and trains nothing.
    again = qgen("launch", "smoke", *sets, "--bundle-size", "3", "--results-dir",
                 str(tmp_path / "fused"))
    assert again.returncode == 0 and "already have results" in again.stdout


class _Interrupt(Exception):
    pass


def test_resume_with_another_bundle_size_continues_the_interrupted_bundle(tmp_path, capsys):
    """A bundle of all 4 trials is interrupted after epoch 1; the resume asks for bundles of 2
    but keeps that bundle whole, so it continues from its checkpoint instead of restarting."""
    import dataclasses

    from qgen_sweep.launcher import LaunchOptions, run_sweep
    from qgen_sweep.plan import interrupted_bundles, plan
    from qgen_sweep.trial.bundle import run_bundle
    from qgen_sweep.trial.config import TrialRuntime, bundle_id

    spec = tiny_spec()
    configs = [t.config for t in plan(spec)]
    root = tmp_path / "run"

    def stop_after_epoch_1(metrics):
        raise _Interrupt

    with pytest.raises(_Interrupt):
        run_bundle(configs, TrialRuntime(**dataclasses.asdict(spec.runtime)),
                   root / "checkpoints", on_epoch=stop_after_epoch_1)
    assert len(interrupted_bundles(root / "checkpoints")) == 1
    store = run_sweep(spec, LaunchOptions(results_dir=root, backend="local", bundle_size=2,
                                          progress_interval=0.0), "resume smoke")
    out = capsys.readouterr().out
    assert "1 interrupted bundle(s) continue from their checkpoints" in out
    rows = final_rows(store)
    assert sorted(r["trial_id"] for r in rows) == sorted(trial_ids(spec))
    assert {r["bundle_id"] for r in rows} == {bundle_id(configs)}  # not two bundles of 2
    assert all(r["epochs_run"] == 2 for r in rows)
    assert interrupted_bundles(root / "checkpoints") == []
