"""The robustness report sections on a store the test writes (tests/test_analysis.py's known
store plus robustness and measures rows from a formula): Table 4's means and marks, the mCE, the
paired intervals, Kendall against the corrupted-data gap, worked out here from the same formula."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from test_analysis import VALUES, build_known_store, config

from qgen_sweep.analysis.report import build_report, render
from qgen_sweep.measures.kendall import DEFAULT_AXES, granulated_kendall
from qgen_sweep.measures.schema import MEASURE_SCHEMA
from qgen_sweep.robustness.schema import ROBUSTNESS_SCHEMA
from qgen_sweep.store import ResultsStore

CORRUPTIONS = ("gaussian_noise", "contrast")


def accuracy(index: int, bits: int, corruption: str, severity: int) -> float:
    """A made-up accuracy: lower for harder severities, contrast and fewer bits."""
    return 0.8 - 0.1 * severity - 0.05 * (corruption == "contrast") - 0.01 * index \
        - 0.02 * (bits == 2) + 0.004 * (bits == 8)


def loss(index: int, bits: int, corruption: str, severity: int) -> float:
    return 1.0 + 0.2 * severity + 0.1 * index - 0.03 * (bits == 2) + 0.05 * (bits == 8)


def done_trials() -> list[tuple[int, int]]:
    return [(i, bits) for bits, values in VALUES.items() for i, v in enumerate(values)
            if isinstance(v, tuple)]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The report of the known store with robustness and measures rows (built once)."""
    tmp_path = tmp_path_factory.mktemp("robust-report")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QGEN_SWEEP_CACHE_DIR", str(tmp_path / "cache"))
        return build_report(_store(tmp_path).root)


def _store(tmp_path: Path) -> ResultsStore:
    store = build_known_store(tmp_path / "tiny")
    for index, bits in done_trials():
        cfg = config(index, bits)
        train_loss = VALUES[bits][index][2]
        rows = [{"trial_id": cfg.trial_id, "sweep": "tiny", "dataset": "digits", "bits": bits,
                 "source": "generated", "layout": "generated", "corruption": c, "severity": s,
                 "images": 100, "loss": loss(index, bits, c, s),
                 "accuracy": accuracy(index, bits, c, s),
                 "gap": loss(index, bits, c, s) - train_loss, "clean_train_loss": train_loss,
                 "clean_test_acc": VALUES[bits][index][1], "seed": 0}
                for c in CORRUPTIONS for s in (1, 2)]
        store.write_rows("robustness", cfg.trial_id, bits, rows, ROBUSTNESS_SCHEMA)
        store.write_row("measures", {"trial_id": cfg.trial_id, "sweep": "tiny",
                                     "dataset": "digits", "bits": bits, "families": "pacbayes",
                                     "pacbayes_init": 1.0 + index - 0.1 * bits,
                                     "l2_norm": VALUES[bits][index][4]}, MEASURE_SCHEMA)
    return store


def test_table4_means_and_better_than_fp32_marks(report: dict) -> None:
    table4 = {(r["corruption"], r["severity"]): r for r in report["robustness_table4"]}
    assert set(table4) == {(c, s) for c in CORRUPTIONS for s in (1, 2)}
    for (corruption, severity), row in table4.items():
        for bits, label in ((32, "FP32"), (8, "Int8"), (4, "Int4"), (2, "Int2")):
            gaps = [loss(i, b, corruption, severity) - VALUES[b][i][2]
                    for i, b in done_trials() if b == bits]
            assert row[label] == pytest.approx(sum(gaps) / len(gaps))
            assert row[f"n_{label.lower()}"] == len(gaps)
        better = {p for p in ("Int8", "Int4", "Int2") if row[p] < row["FP32"]}
        assert set(filter(None, row["better"].split(","))) == better
    # Worked by hand for contrast, severity 1: FP32 gaps 1.1, 1.1, 1.1 (mean 1.1); Int8 1.14,
    # 1.13, 1.12 (1.13); Int4 1.06, 1.04 (1.05); Int2 0.97, 0.77 (0.87).
    assert table4[("contrast", 1)]["better"] == "Int4,Int2"
    markdown = render(report, "markdown")
    assert "Table 4: gap under corruption" in markdown and "| **" in markdown


def test_mce_and_paired_differences_per_corruption(report: dict) -> None:
    mce = {r["precision"]: r for r in report["robustness_mce"]}
    assert set(mce) == {"Int8", "Int4", "Int2"}
    for bits, label in ((8, "Int8"), (4, "Int4"), (2, "Int2")):
        per_model = []
        for index in (i for i, b in done_trials() if b == bits):
            ces = [sum(1 - accuracy(index, bits, c, s) for s in (1, 2))
                   / sum(1 - accuracy(index, 32, c, s) for s in (1, 2)) for c in CORRUPTIONS]
            per_model.append(100 * sum(ces) / len(ces))
        assert mce[label]["mce"] == pytest.approx(sum(per_model) / len(per_model))
        assert mce[label]["n_pairs"] == len(per_model)
        assert mce[label]["ci_low"] <= mce[label]["mce"] <= mce[label]["ci_high"]
    paired = {(r["precision"], r["corruption"]): r for r in report["robustness_paired"]}
    row = paired[("Int2", "contrast")]
    diffs = [sum(loss(i, 2, "contrast", s) - VALUES[2][i][2]
                 - loss(i, 32, "contrast", s) + VALUES[32][i][2] for s in (1, 2)) / 2
             for i in (0, 1)]
    assert row["n_pairs"] == 2 and row["gap_diff"] == pytest.approx(sum(diffs) / 2)
    assert [r["corruption"] for r in report["robustness_paired"] if r["precision"] == "Int2"] \
        == ["gaussian_noise", "contrast", "all corruptions"]
    assert "# robustness_mce" in render(report, "csv")


def test_kendall_of_the_measures_against_the_corrupted_gap(report: dict) -> None:
    rows = {r["measure"]: r for r in report["robustness_kendall"]}
    models = []
    for index, bits in done_trials():
        cfg = config(index, bits)
        gaps = [loss(index, bits, c, s) - VALUES[bits][index][2] for c in CORRUPTIONS
                for s in (1, 2)]
        models.append({"dataset": "digits", "optimizer": cfg.optimizer,
                       "lr_index": (0, 1, 0)[index], "weight_decay": cfg.weight_decay,
                       "width": cfg.width, "depth": cfg.depth, "bits": bits,
                       "pacbayes_init": 1.0 + index - 0.1 * bits,
                       "corruption_gap": sum(gaps) / len(gaps)})
    expected = granulated_kendall(models, "pacbayes_init", target="corruption_gap",
                                  axes=DEFAULT_AXES)
    assert rows["pacbayes_init"]["Psi"] == pytest.approx(expected.overall)
    assert rows["pacbayes_init"]["psi_bits"] == pytest.approx(expected.psi["bits"])
    assert rows["pacbayes_init"]["models"] == len(models)
    by_axis = defaultdict(list)
    for r in report["robustness_kendall"]:
        by_axis[r["measure"]].append(r["Psi"])
    assert "sharpness_init" in by_axis  # every Table 3 measure has a row (NULL when absent)
