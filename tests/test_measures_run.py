"""Measuring a stored trial end to end (real checkpoints from `qgen-sweep launch`, real Parquet)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from qgen_sweep.measures.run import MeasureSettings, measure_trial, run_job
from qgen_sweep.measures.schema import MEASURE_NAMES, MEASURE_SCHEMA
from qgen_sweep.measures.search import SearchSettings
from qgen_sweep.measures.select import pending_trials
from qgen_sweep.store import ResultsStore
from qgen_sweep.trial.config import TrialConfig
from qgen_sweep.trial.models import build_model, conv_weight_count

torch.set_num_threads(2)
QGEN = [sys.executable, "-m", "qgen_sweep.cli"]
TINY = SearchSettings(iterations=3, mc_samples=2, restarts=2, ascent_steps=2, seed=5)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ResultsStore:
    """Two finished smoke trials (Int2 and FP32, SGD, width 4) trained in-process."""
    root = tmp_path_factory.mktemp("store") / "smoke"
    subprocess.run(
        [*QGEN, "launch", "smoke", "--results-dir", str(root), "--backend", "local",
         "--set", "grid.width=[4]", "--set", "grid.bits=[2,32]",
         "--set", 'grid.optimizer=["sgd"]'],
        check=True, capture_output=True, timeout=300,
    )
    return ResultsStore(root)


def _trial(store: ResultsStore, bits: int) -> dict:
    return next(r for r in store.read("trials").to_pylist() if r["bits"] == bits)


def test_measures_row_is_consistent(store: ResultsStore) -> None:
    trial = _trial(store, 2)
    path = measure_trial(store, trial, MeasureSettings(search=TINY, device="cpu"))
    assert path == store.path("measures", trial["trial_id"], 2)
    table = pq.read_table(path)
    assert table.schema.equals(MEASURE_SCHEMA)
    row = table.to_pylist()[0]
    config = TrialConfig.from_dict(__import__("json").loads(trial["config_json"]))
    assert row["omega"] == conv_weight_count(build_model(config, 1, 10))
    assert row["m"] == 1437  # digits training split (80% of 1797)
    # The folded plain network is the trained model: same training accuracy (to one example).
    assert abs(row["acc0"] - trial["train_acc"]) <= 1 / row["m"]
    for name in MEASURE_NAMES:
        assert row[name] == pytest.approx(math.sqrt(row[f"{name}_raw"] / row["m"]))
    assert row["pacbayes_flatness"] == pytest.approx(1 / row["sigma"] ** 2)
    assert row["sharpness_mag_flatness"] == pytest.approx(1 / row["alpha_mag"] ** 2)
    assert row["families"] == "pacbayes,sharpness"
    assert row["noise"] == "reference" and row["seed"] == 5 and row["iterations"] == 3
    # 2 PAC-Bayes searches x <= 3 steps x 2 samples full passes, plus the clean pass, plus the
    # sharpness restarts' passes and ascent batches.
    assert 1 + 2 * 2 <= row["train_passes"] <= 1 + 4 * 3 * 2 + 2 * 3 * 2 * 2
    assert row["seconds"] > 0 and row["l2_norm"] > 0 and row["dist_init"] > 0


def test_families_are_added_without_recomputing_the_others(store: ResultsStore) -> None:
    trial = _trial(store, 32)
    measure_trial(store, trial, MeasureSettings(search=TINY, families=("pacbayes",), device="cpu"))
    first = pq.read_table(store.path("measures", trial["trial_id"], 32)).to_pylist()[0]
    assert first["families"] == "pacbayes" and first["alpha"] is None
    assert first["sharpness_init"] is None and first["pacbayes_init"] is not None
    todo, _ = pending_trials(store, ("pacbayes", "sharpness"), where="bits = 32")
    assert [t["trial_id"] for t in todo] == [trial["trial_id"]]
    measure_trial(store, trial, MeasureSettings(search=TINY, device="cpu"))
    both = pq.read_table(store.path("measures", trial["trial_id"], 32)).to_pylist()[0]
    assert both["families"] == "pacbayes,sharpness"
    assert both["sigma"] == first["sigma"] and both["pacbayes_init"] == first["pacbayes_init"]
    assert both["alpha"] is not None and both["sharpness_orig"] is not None
    assert both["train_passes"] > first["train_passes"]
    assert pending_trials(store, ("pacbayes", "sharpness"), where="bits = 32") == ([], 1)


def test_same_seed_same_measures(store: ResultsStore, tmp_path: Path) -> None:
    trial = _trial(store, 2)
    # PAC-Bayes only: its Monte Carlo noise is where a seed matters most.
    settings = MeasureSettings(search=TINY, families=("pacbayes",), device="cpu")
    copy = ResultsStore(tmp_path)
    for sub in ("checkpoints",):
        src = store.root / sub / trial["trial_id"]
        dst = copy.root / sub / trial["trial_id"]
        dst.mkdir(parents=True)
        for f in ("init.pt", "best.pt"):
            (dst / f).write_bytes((src / f).read_bytes())
    a = pq.read_table(measure_trial(copy, trial, settings)).to_pylist()[0]
    copy.path("measures", trial["trial_id"], 2).unlink()
    b = pq.read_table(measure_trial(copy, trial, settings)).to_pylist()[0]
    for key in ("sigma", "sigma_mag", "sigma_drop", "pacbayes_init", "pacbayes_mag_orig"):
        assert a[key] == b[key], key


def test_a_failing_trial_becomes_a_failure_row(store: ResultsStore, tmp_path: Path) -> None:
    trial = _trial(store, 2)
    empty = ResultsStore(tmp_path)  # no checkpoints: load_model must fail
    result = run_job(str(tmp_path), trial, MeasureSettings(search=TINY, device="cpu").to_dict())
    assert result["status"] == "failed" and "checkpoint" in result["message"]
    failures = list((empty.root / "measure_failures").glob("*.parquet"))
    assert [p.name for p in failures] == [f"{trial['trial_id']}-1.parquet"]
    row = pq.read_table(failures[0]).to_pylist()[0]
    assert row["attempt"] == 1 and row["error_type"] == "QGenError" and row["bits"] == 2
    run_job(str(tmp_path), trial, MeasureSettings(search=TINY, device="cpu").to_dict())
    assert len(list((empty.root / "measure_failures").glob("*.parquet"))) == 2
    assert not empty.path("measures", trial["trial_id"], 2).exists()


def test_invalid_settings_are_usage_errors() -> None:
    from qgen_sweep.errors import UsageError

    with pytest.raises(UsageError, match="mc_samples must be >= 1"):
        MeasureSettings(search=SearchSettings(mc_samples=0))
    with pytest.raises(UsageError, match="--only"):
        MeasureSettings(families=("flatness",))
