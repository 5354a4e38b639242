"""Spec inputs that used to poison a results directory or crash: arbitrary Unicode in the saved
sweep.toml, values the Parquet columns cannot hold, deep nesting, non-UTF-8 files, bad devices."""

from __future__ import annotations

import copy

import pyarrow as pa
import pytest
from cli_helpers import run_cli, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_analysis import build_known_store

from qgen_sweep.plan import plan, save_plan
from qgen_sweep.spec import (
    CONFIG_FIELDS,
    DEFAULT_INT_RANGE,
    INT_RANGES,
    load_spec,
    parse_spec,
    saved_spec,
    spec_from_text,
)
from qgen_sweep.store import CONFIG_COLUMNS, ResultsStore

DEEP = 50_000
# Dotted keys this deep take tomllib quadratic time (78 s at 50,000 on 2 cores); 3,000 is still
# past Python's recursion limit, which is what used to crash the messages and the hashing.
DEEP_KEYS = 3_000


def _one_line_usage_error(result, *needles: str) -> None:
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    assert not result.crashed, result.stderr
    assert len(result.error_lines) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


# ---- Unicode in the saved spec ------------------------------------------------------------------
SMOKE_RAW = load_spec("smoke").raw


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(description=st.text(), results_dir=st.text(min_size=1), lr=st.floats(1e-300, 1e300))
def test_any_unicode_text_round_trips_through_the_saved_toml(description, results_dir, lr):
    raw = copy.deepcopy(SMOKE_RAW)
    raw["description"], raw["results_dir"] = description, results_dir
    raw["grid"]["lr"] = {"sgd": [lr], "adam": [1e-3]}
    spec = parse_spec(raw, name="smoke", source="test")
    again = spec_from_text(spec.to_toml(), name="smoke", source="saved")
    assert again.raw == spec.raw and again.spec_hash == spec.spec_hash
    assert again.description == description and again.results_dir == results_dir


def test_an_emoji_description_survives_launch_then_resume_reads_it(tmp_path):
    text = 'QGen 🙂 ü 中文 "quoted" \\ back\tslash \u0007 bell'
    spec = load_spec("smoke", [f"description={text}"])
    store = ResultsStore(tmp_path / "r")
    save_plan(store, spec, plan(spec))
    again = saved_spec(store.root)
    assert again.description == text and again.spec_hash == spec.spec_hash


def test_text_that_is_not_unicode_is_refused_before_anything_is_written(tmp_path):
    bad = "caf\udce9"  # what Python makes of the Latin-1 byte 0xE9 on a UTF-8 command line
    result = run_cli("validate", "smoke", "--set", f"description={bad}")
    _one_line_usage_error(result, "not Unicode text", "U+DCE9")
    launch = run_cli("launch", "smoke", "--backend", "local", "--results-dir",
                     str(tmp_path / "r"), "--set", f"description={bad}")
    _one_line_usage_error(launch, "not Unicode text")
    assert not (tmp_path / "r").exists()


# ---- values the result columns cannot hold ------------------------------------------------------
@pytest.mark.parametrize(("override", "needle"), [
    ("train.epochs=3000000000", "[1, 2147483647]"),
    (f"train.seed={2**63}", f"[{-(2**63)}, {2**63 - 1}]"),
    (f"train.seed={-(2**63) - 1}", "train.seed"),
    ("grid.depth=[2, 3000000000]", "grid.depth"),
    ("train.batch_size=0", "[1, 2147483647]"),
    ("train.milestones=[1, 3000000000]", "train.milestones"),
    (f"runtime.threads={2**40}", "runtime.threads"),
    ("runtime.eval_test_every=-1", "runtime.eval_test_every"),
    (f"resources.max_concurrent={2**40}", "resources.max_concurrent"),
])
def test_values_out_of_the_column_ranges_fail_validation(override, needle):
    _one_line_usage_error(run_cli("validate", "smoke", "--set", override), needle)


@pytest.mark.parametrize("override", [f"optuna.seed={2**40}", "optuna.seed=-1",
                                      f"optuna.n_trials={2**40}"])
def test_optuna_integers_the_sampler_cannot_take_fail_validation(override):
    _one_line_usage_error(run_cli("validate", "smoke-tpe", "--set", override), override[:11])


def test_the_extreme_values_that_fit_are_accepted():
    for value in (2**63 - 1, -(2**63)):
        result = run_cli("validate", "smoke", "--set", f"train.seed={value}")
        assert result.code == 0, result.stderr


def test_integer_ranges_match_the_parquet_columns():
    limits = {pa.int32(): (-(2**31), 2**31 - 1), pa.int64(): (-(2**63), 2**63 - 1)}
    for name, kind in CONFIG_COLUMNS:
        if CONFIG_FIELDS.get(name) == "integer":
            low, high = INT_RANGES.get(name, DEFAULT_INT_RANGE)
            column_low, column_high = limits[kind]
            assert column_low <= low and high <= column_high, name


def test_a_launch_with_an_unstorable_value_writes_nothing(tmp_path):
    root = tmp_path / "r"
    result = run_cli("launch", "smoke", "--backend", "local", "--results-dir", str(root),
                     "--set", "train.epochs=3000000000")
    _one_line_usage_error(result, "train.epochs")
    assert not (root / "sweep.toml").exists()


# ---- nesting, encodings, devices ----------------------------------------------------------------
@pytest.mark.parametrize("body", [
    "description = " + "[" * DEEP + "]" * DEEP,
    "description = " + "{a = " * DEEP + "1" + "}" * DEEP,
    "[grid.bits" + ".a" * DEEP_KEYS + "]\nx = 1",
    "train.seed" + ".a" * DEEP_KEYS + " = 1",
])
def test_deeply_nested_toml_is_one_line(tmp_path, body):
    path = tmp_path / "deep.toml"
    path.write_text(body)
    _one_line_usage_error(run_cli("validate", str(path)), "nested too deeply")


def test_deeply_nested_set_value_is_one_line():
    value = "[" * DEEP + "]" * DEEP
    _one_line_usage_error(run_cli("validate", "smoke", "--set", f"grid.bits={value}"),
                          "nested too deeply")


def test_a_non_utf8_saved_spec_is_one_line_for_launch_and_resume(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    (root / "sweep.toml").write_bytes(b'description = "caf\xe9"\n')
    before = snapshot(root)
    resume = run_cli("resume", "smoke", "--backend", "local", "--results-dir", str(root))
    _one_line_usage_error(resume, "not a UTF-8 text file")
    assert snapshot(root) == before
    launch = run_cli("launch", "smoke", "--backend", "local", "--results-dir", str(root))
    _one_line_usage_error(launch, "not a UTF-8 text file")
    after = snapshot(root)
    after.pop(".lock", None)  # launch compares the saved spec under its (empty) lock file
    assert after == before


@pytest.mark.parametrize("device", ["cuda:abc", "cuda:", "gpu", "cpu:0", "cuda:0 "])
def test_devices_that_do_not_exist_fail_validation(device):
    _one_line_usage_error(run_cli("validate", "smoke", "--set", f'runtime.device="{device}"'),
                          "runtime.device")


def test_valid_devices_pass_validation():
    for device in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        result = run_cli("validate", "smoke", "--set", f'runtime.device="{device}"')
        assert result.code == 0, (device, result.stderr)


def test_measure_refuses_a_bad_device_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("QGEN_SWEEP_CACHE_DIR", str(tmp_path / "cache"))
    build_known_store(tmp_path / "known", sweep="known")
    before = snapshot(tmp_path / "known")
    _one_line_usage_error(run_cli("measure", "known", "--results-dir", str(tmp_path / "known"),
                                  "--backend", "local", "--device", "cuda:abc"), "--device")
    assert snapshot(tmp_path / "known") == before
