"""Plan: grid expansion, conditional learning rates, deterministic content-addressed ids."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from qgen_sweep.plan import axis_counts, count_by, plan
from qgen_sweep.spec import load_spec


def test_cifar10_grid_is_the_papers_972_trials():
    trials = plan(load_spec("cifar10-grid"))
    assert len(trials) == 972
    assert len({t.trial_id for t in trials}) == 972
    assert count_by(trials, "bits") == {2: 243, 4: 243, 8: 243, 32: 243}
    assert count_by(trials, "depth") == {2: 324, 3: 324, 4: 324}
    assert {t.config.epochs for t in trials} == {300}


def test_learning_rate_is_conditional_on_the_optimizer():
    trials = plan(load_spec("cifar10-grid"))
    pairs = Counter((t.config.optimizer, t.config.lr, t.lr_index) for t in trials)
    assert pairs == {
        ("sgd", 0.1, 0): 108, ("sgd", 0.05, 1): 108, ("sgd", 0.01, 2): 108,
        ("adam", 1e-3, 0): 108, ("adam", 5e-4, 1): 108, ("adam", 1e-4, 2): 108,
        ("rmsprop", 1e-3, 0): 108, ("rmsprop", 5e-4, 1): 108, ("rmsprop", 1e-4, 2): 108,
    }


def test_same_spec_same_ids_and_order():
    first = [t.trial_id for t in plan(load_spec("digits-grid"))]
    second = [t.trial_id for t in plan(load_spec("digits-grid"))]
    assert first == second


def test_resources_and_runtime_do_not_change_ids():
    base = [t.trial_id for t in plan(load_spec("smoke"))]
    other = load_spec("smoke", ["resources.cpu=2", "resources.gpu=1", "runtime.threads=2"])
    assert [t.trial_id for t in plan(other)] == base


def test_training_values_change_ids():
    base = {t.trial_id for t in plan(load_spec("smoke"))}
    longer = {t.trial_id for t in plan(load_spec("smoke", ["train.epochs=4"]))}
    assert not base & longer


def test_precisions_of_one_configuration_are_adjacent():
    trials = plan(load_spec("smoke"))
    first_four = trials[:4]
    assert [t.config.bits for t in first_four] == [2, 4, 8, 32]
    assert len({(t.config.optimizer, t.config.width) for t in first_four}) == 1
    assert [t.position for t in trials] == list(range(16))


def test_plan_rows_carry_the_config():
    trial = plan(load_spec("smoke"))[0]
    row = trial.plan_row("smoke")
    assert row["trial_id"] == trial.trial_id and row["sweep"] == "smoke"
    assert row["config_json"] == trial.config.canonical_json()
    assert row["lr_index"] == 0


def test_axis_counts_for_validate():
    counts = dict(axis_counts(load_spec("cifar100-grid")))
    assert counts["depth"].startswith("3 (3, 4, 5)")
    assert counts["lr"].startswith("3 per optimizer")


def test_only_what_the_fused_engine_implements_is_fusable():
    """A NiN trial with an option only the single-trial engine implements trains alone: in a
    bundle that option would be dropped without a word."""
    from qgen_sweep.errors import UsageError
    from qgen_sweep.plan import fusable
    from qgen_sweep.trial.bundle import check_bundle
    from qgen_sweep.trial.config import TrialConfig

    nin = TrialConfig("digits", 2, "sgd", 0.1, 0.0, depth=2, width=1)
    assert fusable(nin)
    others = {"arch resnet18": dataclasses.replace(nin, arch="resnet18", depth=1),
              "bin_regularizer": dataclasses.replace(nin, bin_regularizer=0.1),
              "pretrained": dataclasses.replace(nin, pretrained="/weights/nin.pt"),
              "dataset imagenet": dataclasses.replace(nin, dataset="imagenet")}
    for reason, config in others.items():
        assert not fusable(config), reason
        with pytest.raises(UsageError, match=reason.split()[0]):
            check_bundle([config])
