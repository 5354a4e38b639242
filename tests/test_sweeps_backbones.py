"""The backbone specs: the paper's ResNet / robustness / NiN-point sweeps plan with the paper's
protocol; `digits-backbones` trains every CNN backbone at every precision on the CPU, and
`measure` and `report` work on it; `--bundle-size` on an arch the fused engine cannot train is a
one-line notice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import cifar_file_names, final_rows

from qgen_sweep.plan import plan
from qgen_sweep.spec import load_spec
from qgen_sweep.store import ResultsStore
from qgen_sweep.trial.archs import ARCHS

REPO = Path(__file__).resolve().parents[1]
CNNS = ("nin", "resnet18", "resnet50", "mobilenet_v1", "mobilenet_v2", "vgg19")
# Small measure settings keep each job to seconds; the defaults are science.md's.
SMALL = ["--iterations", "3", "--mc-samples", "2", "--restarts", "2", "--ascent-steps", "2"]


def qgen(*args: str, timeout: float = 900, env: dict | None = None
         ) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "qgen_sweep.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _archs(name: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in plan(load_spec(name)):
        counts[trial.config.arch] = counts.get(trial.config.arch, 0) + 1
    return counts


@pytest.mark.parametrize(("name", "dataset", "archs"), [
    ("cifar10-resnet", "cifar10", ("resnet18", "resnet50")),
    ("cifar100-resnet", "cifar100", ("resnet18", "resnet50")),
    ("cifar100-c-backbones", "cifar100", ("resnet18", "mobilenet_v1", "vgg19")),
])
def test_resnet_protocol_specs(name: str, dataset: str, archs: tuple[str, ...]) -> None:
    trials = plan(load_spec(name))
    assert _archs(name) == {arch: 4 for arch in archs}  # x 4 precisions
    assert sorted({t.config.bits for t in trials}) == [2, 4, 8, 32]
    for t in trials:
        c = t.config
        assert (c.dataset, c.optimizer, c.lr, c.momentum, c.weight_decay) == \
            (dataset, "sgd", 0.1, 0.9, 1e-4)
        assert (c.epochs, c.milestones, c.gamma) == (200, (80, 160), 0.1)
        assert c.base_width == ARCHS[c.arch].base_width  # the arch's default (resnet: 16)


def test_nin_points_are_slices_of_the_grids() -> None:
    for name, grid, depth in (("cifar10-nin-points", "cifar10-grid", 4),
                              ("cifar100-nin-points", "cifar100-grid", 5)):
        points = plan(load_spec(name))
        assert len(points) == 2 * 27 * 4
        assert {(t.config.depth, t.config.width) for t in points} == {(depth, 10), (depth, 12)}
        in_grid = {t.trial_id for t in plan(load_spec(grid))}
        assert {t.trial_id for t in points} <= in_grid  # the grid's own trials, same ids


@pytest.mark.parametrize("name", ["digits-backbones", "cifar10-resnet", "cifar100-resnet",
                                  "cifar100-c-backbones", "cifar10-nin-points",
                                  "cifar100-nin-points"])
def test_backbone_specs_pass_validate_and_dry_run(name: str, tmp_path: Path) -> None:
    env = cifar_file_names(tmp_path / "data")  # the CIFAR specs check their files are there
    valid = qgen("validate", name, env=env)
    assert valid.returncode == 0, valid.stderr
    dry = qgen("launch", name, "--dry-run", "--results-dir", str(tmp_path / name), env=env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would run" in dry.stdout and not (tmp_path / name).exists()


def test_bundle_size_on_an_unfusable_arch_is_a_one_line_notice(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    run = qgen("launch", "digits-backbones", "--backend", "local", "--results-dir", str(root),
               "--set", 'grid.arch=["nin","resnet18"]', "--set", "grid.bits=[2,32]",
               "--set", "train.epochs=1", "--set", "train.milestones=[1]", "--bundle-size", "2")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    notices = [ln for ln in run.stdout.splitlines() if "trains unfused" in ln]
    assert notices == ["fused engine: arch resnet18 trains unfused, one trial per task "
                       "(2 trials); bundles are for nin"]
    assert "error" not in run.stderr.lower()
    engines = {(r["arch"], r["engine"]) for r in final_rows(ResultsStore(root))}
    assert engines == {("nin", "fused"), ("resnet18", "single")}


@pytest.mark.slow  # 24 trials on Ray (~4.5 min on 2 loaded cores), then 12 measure jobs
def test_digits_backbones_trains_measures_and_reports_every_arch(tmp_path: Path) -> None:
    root = tmp_path / "backbones"
    run = qgen("launch", "digits-backbones", "--results-dir", str(root))
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    rows = final_rows(ResultsStore(root))
    loss = {(r["arch"], r["bits"]): r["train_loss"] for r in rows if r["status"] == "done"}
    assert sorted(loss) == sorted((a, b) for a in CNNS for b in (2, 4, 8, 32))
    for arch in CNNS:  # the paper's pattern: Int2 fits the training set worse than FP32
        assert loss[(arch, 2)] > loss[(arch, 32)], (arch, loss[(arch, 2)], loss[(arch, 32)])
    measured = qgen("measure", "digits-backbones", "--results-dir", str(root), "--backend",
                    "local", "--where", "bits IN (2, 32)", *SMALL, "--json")
    assert measured.returncode == 0, measured.stderr[-2000:]
    summary = json.loads(measured.stdout)
    assert (summary["measured"], summary["failed"]) == (12, 0)
    report = qgen("report", "digits-backbones", "--results-dir", str(root), "--format", "json")
    assert report.returncode == 0, report.stderr[-2000:]
    tables = json.loads(report.stdout)
    assert {r["arch"] for r in tables["table2"]} == set(CNNS)
    table3 = {(r["arch"], r["measure"]): r for r in tables["table3"]}
    for arch in CNNS:
        row = table3[(arch, "pacbayes_init")]
        assert row["models"] == 2 and row["FP32"] is not None and row["Int2"] is not None
