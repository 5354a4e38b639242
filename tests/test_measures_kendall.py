"""Granulated Kendall coefficient on hand-made tables."""

from __future__ import annotations

import math

import pytest
from scipy.stats import kendalltau

from qgen_sweep.measures.kendall import granulated_kendall

AXES = ("optimizer", "lr_index")


def _rows(table: list[tuple], dataset: str = "cifar10") -> list[dict]:
    return [
        {"dataset": dataset, "optimizer": o, "lr_index": i, "measure": m, "gap": g}
        for o, i, m, g in table
    ]


# optimizer, lr_index, measure, gap
TABLE = [
    ("sgd", 0, 1.0, 1.0),
    ("sgd", 1, 2.0, 2.0),
    ("sgd", 2, 3.0, 0.5),
    ("adam", 0, 4.0, 3.0),
    ("adam", 1, 1.0, 4.0),
    ("adam", 2, 5.0, 5.0),
]


def test_hand_computed_table() -> None:
    # lr axis, groups by optimizer:
    #   sgd  measure (1, 2, 3) vs gap (1, 2, 0.5): pairs C, D, D -> tau = -1/3
    #   adam measure (4, 1, 5) vs gap (3, 4, 5):   pairs D, C, C -> tau = +1/3   => psi = 0
    # optimizer axis, groups by lr_index: (1,4)/(1,3) C, (2,1)/(2,4) D, (3,5)/(0.5,5) C
    #   taus 1, -1, 1 => psi = 1/3.  Psi = (0 + 1/3) / 2 = 1/6.
    result = granulated_kendall(_rows(TABLE), "measure", axes=AXES)
    assert result.psi["lr_index"] == pytest.approx(0.0, abs=1e-12)
    assert result.psi["optimizer"] == pytest.approx(1 / 3)
    assert result.overall == pytest.approx(1 / 6)
    assert result.groups == {"optimizer": 3, "lr_index": 2}


def test_single_group_equals_scipy_kendall_tau_including_ties() -> None:
    measure = [0.3, 0.1, 0.4, 0.1, 0.5, 0.9, 0.2]
    gap = [1.0, 2.0, 2.0, 0.5, 3.0, 2.5, 0.7]
    rows = [
        {"dataset": "cifar10", "optimizer": "sgd", "lr_index": i, "measure": m, "gap": g}
        for i, (m, g) in enumerate(zip(measure, gap, strict=True))
    ]
    result = granulated_kendall(rows, "measure", axes=AXES)
    expected = kendalltau(measure, gap).statistic
    assert result.psi["lr_index"] == pytest.approx(expected, rel=1e-12)
    # Every optimizer-axis group holds a single model: no tau, psi undefined, left out of Psi.
    assert math.isnan(result.psi["optimizer"]) and result.groups["optimizer"] == 0
    assert result.overall == pytest.approx(expected, rel=1e-12)


def test_datasets_are_never_grouped_together() -> None:
    # The second dataset reverses the order; mixing it in would change the lr-axis groups.
    other = [(o, i, m, -g) for o, i, m, g in TABLE]
    both = _rows(TABLE) + _rows(other, dataset="cifar100")
    result = granulated_kendall(both, "measure", axes=AXES)
    # cifar100 taus are the negatives of cifar10's: lr axis (0 + 0) / 4 groups.
    assert result.groups == {"optimizer": 6, "lr_index": 4}
    assert result.psi["optimizer"] == pytest.approx(0.0, abs=1e-12)


def test_missing_measures_are_skipped() -> None:
    rows = _rows(TABLE)
    rows[2]["measure"] = None  # sgd lr 2 not measured: sgd's lr group keeps 2 models (C)
    rows[5]["measure"] = float("nan")
    result = granulated_kendall(rows, "measure", axes=AXES)
    # lr axis: sgd (1,2)/(1,2) -> +1, adam (4,1)/(3,4) -> -1 => 0
    assert result.psi["lr_index"] == pytest.approx(0.0, abs=1e-12)
    # optimizer axis: lr 0 -> +1, lr 1 -> -1, lr 2 has no pair
    assert result.groups["optimizer"] == 2


def test_a_perfect_measure_scores_one() -> None:
    rows = [dict(r, measure=r["gap"] * 2 + 1) for r in _rows(TABLE)]
    assert granulated_kendall(rows, "measure", axes=AXES).overall == pytest.approx(1.0)
