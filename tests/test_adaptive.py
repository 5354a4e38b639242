"""Adaptive search without Ray: the [optuna] spec table, the search space, the ledger rules
(reuse of finished configurations, budgets, reconcile after a killed driver), the plan, status
and report sections. Real Optuna journal files, real trial engine on digits, real Parquet.
The Ray Tune path (OptunaSearch, ASHA, SIGKILL + resume) is in test_optuna_ray.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import optuna
import pyarrow.parquet as pq
import pytest
from optuna.trial import FixedTrial, TrialState

from qgen_sweep.adaptive.report import report_sections, study_rows
from qgen_sweep.adaptive.strategy import budget
from qgen_sweep.adaptive.study import (
    ATTR_OUTCOME,
    ATTR_TRIAL_ID,
    AdaptiveStudy,
    PlanLedger,
    StudyKey,
    finished_count,
    load_study,
    open_storage,
    planned_from_params,
    reconcile,
    study_keys,
    suggest,
)
from qgen_sweep.errors import QGenError, SpecError
from qgen_sweep.launcher import LaunchOptions, check_complete, run_sweep
from qgen_sweep.plan import plan
from qgen_sweep.spec import load_spec, saved_spec
from qgen_sweep.store import ResultsStore, read_attempts

QGEN = [sys.executable, "-m", "qgen_sweep.cli"]
# smoke-tpe on two precisions, 2 epochs: 2 studies x 4 trials of about a second each.
SMALL = ("grid.bits=[2, 32]", "train.epochs=2")


def _run(spec, root):
    return run_sweep(spec, LaunchOptions(results_dir=root, backend="local",
                                          progress_interval=0.0), f"launch {spec.name}")


def _final_rows(store: ResultsStore) -> list[dict]:
    return [pq.read_table(p).to_pylist()[0] for p in store.files("trials")]


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One local search of the small smoke-tpe (module-wide: the engine runs once)."""
    root = tmp_path_factory.mktemp("tpe") / "run"
    spec = load_spec("smoke-tpe", SMALL)
    store = _run(spec, root)
    return spec, store


# ---- spec ----------------------------------------------------------------------------------------
def test_shipped_adaptive_specs_validate():
    smoke, cifar = load_spec("smoke-tpe"), load_spec("cifar10-tpe")
    assert smoke.search == cifar.search == "optuna"
    assert smoke.optuna.sampler == "tpe" and smoke.optuna.pruner == "none"
    assert [k.bits for k in study_keys(smoke)] == [2, 4, 8, 32]
    assert budget(smoke) == 16 and budget(cifar) == 240
    assert cifar.optuna.pruner == "asha" and cifar.optuna.objective == "test_loss"
    # cifar10-tpe searches exactly cifar10-grid's space: its suggestions are grid trials
    grid = load_spec("cifar10-grid")
    assert (cifar.axes, cifar.lr_table, cifar.fixed) == (grid.axes, grid.lr_table, grid.fixed)


@pytest.mark.parametrize(("override", "message"), [
    ("optuna.sampler=\"cmaes\"", "optuna.sampler: 'cmaes' is not allowed; allowed: tpe, random"),
    ("optuna.direction=\"down\"", "optuna.direction: 'down' is not allowed"),
    ("optuna.n_trials=0", "optuna.n_trials: must be an integer >= 1, but got 0"),
    ("optuna.n_trials=2.5", "optuna.n_trials: must be an integer, but got 2.5"),
    ("optuna.objective=\"accuracy\"", "optuna.objective: 'accuracy' is not allowed; allowed: "),
    ("optuna.per_precision=1", "optuna.per_precision: must be a boolean, but got 1"),
    ("optuna.reduction_factor=1", "optuna.reduction_factor: must be an integer >= 2"),
])
def test_bad_optuna_values_are_one_line_errors(override, message):
    with pytest.raises(SpecError) as error:
        load_spec("smoke-tpe", [override])
    assert len(error.value.problems) == 1
    assert message in error.value.problems[0]


def test_unknown_optuna_key_suggests_the_right_one():
    with pytest.raises(SpecError, match="unknown key 'n_trial' .*did you mean 'n_trials'"):
        load_spec("smoke-tpe", ["optuna.n_trial=3"])


def test_asha_needs_a_per_epoch_objective():
    with pytest.raises(SpecError, match="optuna.pruner: \"asha\" compares trials by their "
                                        "per-epoch objective, which 'l2_norm' does not have"):
        load_spec("smoke-tpe", ["optuna.pruner=\"asha\"", "optuna.objective=\"l2_norm\""])


def test_optuna_table_on_a_grid_sweep_is_refused():
    with pytest.raises(SpecError, match="optuna: only allowed with search = \"optuna\""):
        load_spec("smoke", ["optuna.n_trials=3"])


def test_budget_is_not_part_of_the_identity_but_the_objective_is():
    base = load_spec("smoke-tpe")
    assert load_spec("smoke-tpe", ["optuna.n_trials=9"]).spec_hash == base.spec_hash
    assert load_spec("smoke-tpe", ["optuna.direction=\"maximize\"",
                                   "optuna.objective=\"test_acc\""]).spec_hash != base.spec_hash
    assert load_spec("smoke").spec_hash == load_spec("smoke").spec_hash  # grid hashes unchanged


def test_validate_cli_describes_the_studies_and_rejects_bad_values():
    ok = subprocess.run([*QGEN, "validate", "smoke-tpe"], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "4 studies x 4 trials = 16 trials over a space of 16 configurations" in ok.stdout
    bad = subprocess.run([*QGEN, "validate", "smoke-tpe", "--set", "optuna.sampler=\"grid\""],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "optuna.sampler: 'grid' is not allowed" in bad.stderr


# ---- search space --------------------------------------------------------------------------------
def test_every_grid_point_is_a_point_of_the_space_with_the_same_id():
    """Suggestions are grid trials: same config, same content-addressed id, same lr level."""
    spec = load_spec("cifar10-tpe")
    for key in study_keys(spec):
        grid = [t for t in plan(spec) if t.config.bits == key.bits]
        assert len(grid) == 243
        for trial in grid:
            c = trial.config
            params = {"optimizer": c.optimizer, f"lr_{c.optimizer}": c.lr,
                      "weight_decay": c.weight_decay, "depth": c.depth, "width": c.width}
            suggested = suggest(FixedTrial(params), spec, key.bits)
            assert suggested == params  # lr is asked only for the chosen optimizer
            planned = planned_from_params(spec, key.bits, suggested)
            assert (planned.trial_id, planned.lr_index) == (trial.trial_id, trial.lr_index)


def test_one_study_over_all_precisions_searches_bits_too():
    spec = load_spec("smoke-tpe", ["optuna.per_precision=false"])
    assert study_keys(spec) == [StudyKey("smoke-tpe", None)]
    params = {"optimizer": "adam", "lr_adam": 1e-3, "weight_decay": 0.0, "width": 4, "bits": 8}
    assert suggest(FixedTrial(params), spec, None) == params
    assert planned_from_params(spec, None, params).config.bits == 8


# ---- a search, end to end in-process -------------------------------------------------------------
def test_each_study_ends_with_the_requested_trials_and_one_row_per_trial_id(searched):
    spec, store = searched
    storage = open_storage(store.root)
    for key in study_keys(spec):
        study = optuna.load_study(study_name=key.name, storage=storage)
        assert finished_count(study) == spec.optuna.n_trials == 4
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
        for trial in study.get_trials(states=(TrialState.COMPLETE,)):
            row = pq.read_table(store.path("trials", trial.user_attrs[ATTR_TRIAL_ID],
                                           key.bits)).to_pylist()[0]
            assert trial.value == row["test_loss"]  # the study was told the stored value
    rows = _final_rows(store)
    assert set(Counter(r["trial_id"] for r in rows).values()) == {1}
    plan_ids = pq.read_table(store.plan_path).column("trial_id").to_pylist()
    assert sorted(plan_ids) == sorted(r["trial_id"] for r in rows)
    check_complete(spec, store)


def test_a_configuration_suggested_twice_is_trained_once(searched):
    spec, store = searched
    rows = study_rows(store.root)
    reused = sum(r["reused"] for r in rows)
    trained = len(_final_rows(store))
    # every study trial is either a trained configuration or a reuse of one
    assert trained + reused == sum(r["finished"] for r in rows) == 8
    for row in _final_rows(store):
        assert len(read_attempts(store, row["trial_id"])) == 1  # never trained twice


def test_raising_the_budget_continues_the_same_studies(searched, tmp_path):
    import shutil

    spec, store = searched
    root = tmp_path / "copy"
    shutil.copytree(store.root, root)
    before = {p.name: p.stat().st_mtime_ns for p in ResultsStore(root).files("trials")}
    more = load_spec("smoke-tpe", [*SMALL, "optuna.n_trials=6"])
    _run(more, root)
    rows = study_rows(root)
    assert [r["finished"] for r in rows] == [6, 6]
    assert saved_spec(root).optuna.n_trials == 6
    after = {p.name: p.stat().st_mtime_ns for p in ResultsStore(root).files("trials")}
    assert all(after[name] == mtime for name, mtime in before.items())  # none rerun
    with pytest.raises(QGenError, match=r"2 of 10 trials of the search have no result"):
        check_complete(load_spec("smoke-tpe", [*SMALL, "optuna.n_trials=5"]), store)


def test_reconcile_settles_trials_a_killed_driver_left_running(searched, tmp_path):
    """A RUNNING trial whose configuration has a final row is told its value; one without is
    marked interrupted and enqueued, so the next suggestion continues it."""
    spec, store = searched
    rows = _final_rows(store)
    done, bits = rows[0], rows[0]["bits"]
    key = StudyKey(f"{spec.name}/bits={bits}", bits)
    finished_ids = {r["trial_id"] for r in rows}
    space = list(_all_params(spec))
    params_done = next(p for p in space
                       if planned_from_params(spec, bits, p).trial_id == done["trial_id"])
    params_open = next(p for p in space
                       if planned_from_params(spec, bits, p).trial_id not in finished_ids)
    storage = open_storage(tmp_path)
    study = load_study(spec, key, storage)  # a fresh journal, the same store
    for params in (params_done, params_open):  # two trials asked, then the driver "dies"
        study.enqueue_trial(params)
        assert suggest(study.ask(), spec, bits) == params
    assert reconcile(spec, key, study, store, storage) == {"told": 1, "requeued": 1}
    first, second, requeued = study.get_trials()
    assert requeued.state == TrialState.WAITING
    assert first.state == TrialState.COMPLETE and first.value == done["test_loss"]
    assert second.state == TrialState.FAIL and second.user_attrs[ATTR_OUTCOME] == "interrupted"
    assert finished_count(study) == 1
    assert suggest(study.ask(), spec, bits) == params_open  # the interrupted one comes back
    assert reconcile(spec, key, study, store, storage) == {"told": 0, "requeued": 1}
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1  # enqueued once, not twice


def test_a_configuration_the_pruner_stopped_is_not_trained_again(searched, tmp_path):
    """The pruner's verdict on a configuration is final: when the sampler suggests it again, the
    study is told PRUNED at once, nothing trains and the plan does not list it."""
    spec, store = searched
    bits = spec.axes["bits"][0]
    key = StudyKey(f"{spec.name}/bits={bits}", bits)
    finished_ids = {r["trial_id"] for r in _final_rows(store)}
    params = next(p for p in _all_params(spec)
                  if planned_from_params(spec, bits, p).trial_id not in finished_ids)
    ledger = PlanLedger(spec, store)
    study = AdaptiveStudy(spec, key, open_storage(tmp_path), store, ledger)
    study.study.enqueue_trial(params)
    planned = study.admit(first := study.study.ask(), params)
    assert planned is not None  # no result yet: it runs
    first.report(1.5, 1)  # the epoch the pruner stopped it at
    assert study.finish(planned.trial_id, bits, error=False).label == "pruned"
    study.study.enqueue_trial(params)
    assert study.admit(again := study.study.ask(), params) is None
    told = study.study.get_trials()[again.number]
    assert told.state == TrialState.PRUNED and told.user_attrs["reused"]
    assert planned.trial_id not in ledger.trials and study.running == {}


def _all_params(spec):
    for optimizer in spec.axes["optimizer"]:
        for lr in spec.lr_table[optimizer]:
            for wd in spec.axes["weight_decay"]:
                for width in spec.axes["width"]:
                    yield {"optimizer": optimizer, f"lr_{optimizer}": lr, "weight_decay": wd,
                           "width": width}


def test_trials_failing_for_good_are_rows_and_the_search_stops(tmp_path, monkeypatch):
    """Every attempt raises: each failure is a row, failed trials do not count toward the
    budget, and the search gives up after n_trials of them instead of asking forever."""
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"faults": [{"trial_id": "*", "epoch": 0, "times": "always",
                                              "action": "raise"}]}))
    monkeypatch.setenv("QGEN_FAULT_INJECTION", str(faults))
    spec = load_spec("smoke-tpe", ["grid.bits=[32]", "optuna.n_trials=2",
                                   "resources.max_failures=1"])
    store = _run(spec, tmp_path / "run")
    (row,) = study_rows(store.root)
    assert (row["finished"], row["failed"]) == (0, 2)
    failures = store.read("failures").to_pylist()
    assert len(failures) == 2 * 2  # two trials x (first attempt + one retry)
    assert {f["error_type"] for f in failures} == {"InjectedFault"}
    with pytest.raises(QGenError, match=r"^2 of 2 trials of the search have no result"):
        check_complete(spec, store)


def test_a_diverged_trial_is_a_finished_trial_of_the_study(tmp_path):
    """lr = 1e6 makes SGD diverge in the first epoch: a result with status diverged, told to
    Optuna as FAIL (no finite value) but counted toward the budget."""
    spec = load_spec("smoke-tpe", ["grid.bits=[32]", "grid.optimizer=[\"sgd\"]",
                                   "grid.lr={sgd = [1e6]}", "optuna.n_trials=2",
                                   "train.epochs=1", "train.milestones=[1]"])
    store = _run(spec, tmp_path / "run")
    (row,) = study_rows(store.root)
    assert (row["finished"], row["diverged"], row["best_value"]) == (2, 2, None)
    assert {r["status"] for r in _final_rows(store)} == {"diverged"}
    check_complete(spec, store)


# ---- status and report ---------------------------------------------------------------------------
def test_status_shows_the_best_trial_per_precision(searched):
    spec, store = searched
    out = subprocess.run([*QGEN, "status", "smoke-tpe", "--results-dir", str(store.root)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "adaptive search: minimize test_loss; best trial so far per precision" in out.stdout
    best = {r["bits"]: r for r in study_rows(store.root)}
    for bits in (2, 32):
        rows = [r for r in _final_rows(store) if r["bits"] == bits and r["status"] == "done"]
        top = min(rows, key=lambda r: r["test_loss"])
        assert best[bits]["best_trial_id"] == top["trial_id"]
        assert f"bits={bits}: 4/4 finished" in out.stdout and top["trial_id"] in out.stdout
    as_json = subprocess.run([*QGEN, "status", "smoke-tpe", "--results-dir", str(store.root),
                              "--json"], capture_output=True, text=True, timeout=120)
    studies = json.loads(as_json.stdout)["studies"]
    assert [s["study"] for s in studies] == ["smoke-tpe/bits=2", "smoke-tpe/bits=32"]


def test_report_sections_give_best_configs_and_importances(searched):
    spec, store = searched
    sections = report_sections(store.root)
    assert [r["bits"] for r in sections["optuna_best"]] == [2, 32]
    assert all(r["best_config"] and r["finished"] == 4 for r in sections["optuna_best"])
    by_study: dict[str, float] = {}
    for row in sections["optuna_importances"]:
        assert row["param"] in {"optimizer", "lr_sgd", "lr_adam", "weight_decay", "width"}
        by_study[row["study"]] = by_study.get(row["study"], 0.0) + row["importance"]
    assert by_study and all(abs(total - 1.0) < 1e-6 for total in by_study.values())
    assert report_sections(store.root.parent) == sections  # found below a parent folder too


def test_report_command_adds_the_adaptive_sections(searched):
    spec, store = searched
    markdown = subprocess.run([*QGEN, "report", "--results-dir", str(store.root)],
                              capture_output=True, text=True, timeout=180)
    assert markdown.returncode == 0, markdown.stderr
    assert "## Adaptive search: best configuration per precision" in markdown.stdout
    assert "## Adaptive search: hyperparameter importances" in markdown.stdout
    as_json = subprocess.run([*QGEN, "report", "--results-dir", str(store.root), "--format",
                              "json"], capture_output=True, text=True, timeout=180)
    report = json.loads(as_json.stdout)
    assert report["optuna_best"] == report_sections(store.root)["optuna_best"]
    assert report["table1"]  # the grid's sections are still there, over the same store


def test_a_grid_results_directory_has_no_adaptive_sections(tmp_path):
    assert report_sections(tmp_path) == {} and study_rows(tmp_path) == []
