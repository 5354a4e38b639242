"""`qgen-sweep report` as a real subprocess: the known store (hand-computed numbers) and the real
smoke sweep (16 tiny NiN trainings on digits, run with `qgen-sweep launch smoke`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from test_analysis import PAIRED, TABLE1, TABLE2, build_known_store

from qgen_sweep.analysis.style import svg_texts

EXE = str(Path(sys.executable).with_name("qgen-sweep"))
# report --plots without measures (the measures figure needs `qgen-sweep measure` first)
FIGURES = ("paired_diff", "loss_curves", "step_sizes", "gap_by_precision", "test_acc_vs_gap")


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """Subprocess environment: private analysis cache, few threads (2-core CI machine)."""
    cache = tmp_path_factory.mktemp("cache")
    return os.environ | {"QGEN_SWEEP_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}


def qgen(env, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def known(tmp_path) -> Path:
    build_known_store(tmp_path / "tiny")
    return tmp_path / "tiny"


def assert_valid_pngs(paths: list[Path]) -> None:
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        with Image.open(path) as image:
            image.verify()  # checks the chunks and their CRCs
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
            image.load()  # decodes every pixel


def test_json_report_has_the_keys_and_hand_computed_numbers(known, env):
    result = qgen(env, "report", "--results-dir", str(known), "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"table1", "paired", "table2"} <= set(report)
    assert [row["bits"] for row in report["table1"]] == [32, 8, 4, 2]
    for row in report["table1"]:
        n, diverged, failed, (acc, acc_sd), *_ = TABLE1[row["bits"]]
        assert (row["n"], row["diverged"], row["failed"]) == (n, diverged, failed)
        assert row["train_acc_mean"] == pytest.approx(acc)
        assert row["train_acc_std"] == pytest.approx(acc_sd)
    assert {(r["bits"], r["metric"]) for r in report["paired"]} == set(PAIRED)
    for row in report["paired"]:
        assert row["p_value"] == pytest.approx(PAIRED[(row["bits"], row["metric"])][2])
    assert len(report["table2"]) == len(TABLE2)
    assert "11 of 13 trials finished" in result.stderr


def test_markdown_report_shows_percent_and_progress(known, env):
    result = qgen(env, "report", "--results-dir", str(known))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert ("tiny: 11 of 13 trials finished (done 10, collapsed 0, diverged 1, failed 1, "
            "pending 1)") in text
    assert "| FP32 | 3 | 0 | 0 | 0 | 80.00 ± 10.00 | 50.00 ± 10.00 | 0.200 ± 0.100 |" in text
    assert "| Int2 | 2 | 0 | 0 | 1 |" in text and "| Int4 | 2 | 0 | 1 | 0 |" in text
    assert (
        text.index("| FP32 |")
        < text.index("| Int8 |")
        < text.index("| Int4 |")
        < text.index("| Int2 |")
    )
    # Table 2 rows name their arch (one table per arch, as the paper).
    assert "| nin depth 3 x width 8 | 14.00 | 13.00 | - | - |" in text  # one model: no sd


def test_csv_report_sections(known, env):
    result = qgen(env, "report", "--results-dir", str(known), "--format", "csv")
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["# progress", "# table1", "# paired", "# table2"]
    assert blocks[1].splitlines()[1].startswith(
        "sweep,dataset,bits,precision,n,collapsed,diverged,failed")


def test_report_plots_are_valid_pngs(known, env, tmp_path):
    plots = tmp_path / "plots"
    result = qgen(env, "report", "--results-dir", str(known), "--plots", str(plots),
                  "--plot-formats", "png,svg")
    assert result.returncode == 0, result.stderr
    expected = [plots / f"tiny-{name}.{fmt}" for name in FIGURES for fmt in ("png", "svg")]
    assert sorted(plots.iterdir()) == sorted(expected)
    assert_valid_pngs([p for p in expected if p.suffix == ".png"])
    assert "Δ generalization gap, Int-b − FP32 (nats)" in svg_texts(plots / "tiny-paired_diff.svg")
    bad = qgen(env, "report", "--results-dir", str(known), "--plots", str(plots),
               "--plot-formats", "png,jpg")
    assert bad.returncode == 2 and "--plot-formats takes a comma-separated subset" in bad.stderr


def test_report_on_empty_or_missing_store_says_so(tmp_path, env):
    (tmp_path / "fresh" / "trials").mkdir(parents=True)
    empty = qgen(env, "report", "--results-dir", str(tmp_path / "fresh"))
    assert empty.returncode == 1 and "no trials in" in empty.stderr
    missing = qgen(env, "report", "--results-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_report_across_sweeps_keeps_them_apart(tmp_path, env):
    build_known_store(tmp_path / "runs" / "alpha", sweep="alpha")
    build_known_store(tmp_path / "runs" / "beta", sweep="beta")
    result = qgen(env, "report", "--results-dir", str(tmp_path / "runs"), "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(r["sweep"], r["bits"]) for r in report["table1"]] == [
        (s, b) for s in ("alpha", "beta") for b in (32, 8, 4, 2)
    ]
    assert {r["n_pairs"] for r in report["paired"] if r["bits"] == 8} == {3}


# -- the real smoke sweep ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, env) -> Path:
    """Run the shipped smoke sweep for real (in-process backend: no Ray start-up on CI)."""
    results = tmp_path_factory.mktemp("runs") / "smoke"
    launch = qgen(
        env, "launch", "smoke", "--results-dir", str(results), "--backend", "local", timeout=900
    )
    assert launch.returncode == 0, launch.stdout[-2000:] + launch.stderr[-2000:]
    return results


def test_smoke_sweep_report_and_figures(smoke, env, tmp_path):
    plots = tmp_path / "plots"
    result = qgen(env, "report", "smoke", "--results-dir", str(smoke), "--plots", str(plots),
                  "--plot-formats", "png")
    assert result.returncode == 0, result.stderr
    assert "smoke: 16 of 16 trials finished" in result.stdout
    for precision in ("FP32", "Int8", "Int4", "Int2"):
        assert f"\n| {precision} | " in result.stdout
    expected = [plots / f"smoke-{name}.png" for name in FIGURES]
    assert all(p.is_file() for p in expected)
    assert_valid_pngs(expected)


def test_smoke_sweep_json_report(smoke, env):
    result = qgen(env, "report", "smoke", "--results-dir", str(smoke), "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["bits"] for r in report["table1"]] == [32, 8, 4, 2]
    assert sum(r["n"] + r["diverged"] + r["failed"] for r in report["table1"]) == 16
    for row in report["table1"]:
        if row["n"]:
            assert 0 <= row["train_acc_mean"] <= 100 and row["train_loss_mean"] > 0
    assert {r["bits"] for r in report["paired"]} <= {8, 4, 2}
