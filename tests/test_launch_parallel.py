"""Data-parallel trials under `qgen-sweep launch` on a real local Ray cluster: one trial of a
tiny ImageFolder tree as 2 Ray Train workers (gloo on the CPU), the first attempt's rank 0
SIGKILLed after epoch 2's checkpoint; Tune retries it, the workers continue from that checkpoint,
and the trial ends with what one uninterrupted process computes. Bad inputs stop the launch
with one line and exit 2 before anything trains."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import run_cli
from sweep_helpers import final_rows, write_faults

from qgen_sweep.backends.faults import ENV_VAR, fired_count
from qgen_sweep.store import ResultsStore, read_attempts
from qgen_sweep.trial.config import TrialConfig, TrialRuntime
from qgen_sweep.trial.train import run_trial
from tests.imagenet_helpers import make_imagenet

SPEC = """
description = "two data-parallel workers on a tiny ImageFolder tree"
search = "grid"
[grid]
bits = [4]
[train]
dataset = "imagenet"
arch = "resnet18"
base_width = 4
resolution = 32
optimizer = "sgd"
lr = 0.05
weight_decay = 1e-4
epochs = 3
milestones = [2]
batch_size = 8
augment = "crop-flip"
[resources]
gpus_per_trial = 2
cpu = 0.5
max_failures = 1
[runtime]
device = "cpu"
dtype = "float64"
data_workers = 0
eval_batch_size = 16
threads = 1
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_imagenet(root, classes=3, train_per_class=8, val_per_class=2)
    return root


def _spec(tmp_path: Path, data_dir: Path, extra: str = "") -> Path:
    path = tmp_path / "ddp.toml"
    path.write_text(SPEC + f'data_dir = "{data_dir}"\n' + extra)
    return path


@pytest.mark.slow  # a Ray cluster, a Tune trial and 2 Ray Train workers, twice: minutes
def test_two_workers_killed_mid_way_resume_and_match_one_process(data_dir, tmp_path,
                                                                 monkeypatch):
    spec = _spec(tmp_path, data_dir)
    results = tmp_path / "runs"
    faults = write_faults(tmp_path / "faults.json",
                          [{"trial_id": "*", "epoch": 2, "times": 1, "action": "kill"}])
    monkeypatch.setenv(ENV_VAR, str(faults))
    result = run_cli("launch", str(spec), "--results-dir", str(results),
                     "--max-concurrent", "1")
    assert result.code == 0, result.stderr
    store = ResultsStore(results)
    (row,) = final_rows(store)
    assert row["status"] == "done" and row["epochs_run"] == 3
    attempts = read_attempts(store, row["trial_id"])
    assert len(attempts) == 2 and attempts[1]["first_epoch"] == 3  # resumed after epoch 2
    assert fired_count(faults, 0, row["trial_id"]) == 1
    config = TrialConfig.from_dict(__import__("json").loads(row["config_json"]))
    runtime = TrialRuntime(device="cpu", data_dir=str(data_dir), dtype="float64",
                           data_workers=0, eval_batch_size=16, threads=1)
    single = run_trial(config, runtime, tmp_path / "single")
    epochs = sorted(store.epochs(row["trial_id"], 4), key=lambda r: r["epoch"])
    for got, want in zip(epochs, single.history, strict=True):
        assert abs(got["train_loss"] - want.train_loss) <= 1e-9 * abs(want.train_loss)
    for name in ("train_loss", "test_loss", "train_acc", "test_acc", "l2_norm"):
        assert abs(row[name] - getattr(single, name)) <= 1e-9 * max(1.0, abs(row[name]))


def test_missing_dataset_and_weights_are_one_line_exit_2(tmp_path, data_dir, monkeypatch):
    missing = _spec(tmp_path, tmp_path / "nowhere")
    result = run_cli("launch", str(missing), "--results-dir", str(tmp_path / "r1"))
    assert result.code == 2 and len(result.error_lines) == 1
    assert "imagenet data not found" in result.stderr and "train/<wnid>/*.JPEG" in result.stderr
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = _spec(tmp_path, data_dir).read_text().replace(
        "base_width = 4\n", 'pretrained = "torchvision"\n')
    (tmp_path / "w.toml").write_text(weights)
    result = run_cli("launch", str(tmp_path / "w.toml"), "--results-dir", str(tmp_path / "r2"))
    assert result.code == 2 and len(result.error_lines) == 1
    assert "resnet18-f37072fd.pth" in result.stderr and str(tmp_path / "torch") in result.stderr
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


@pytest.mark.slow  # starts a Ray cluster
def test_more_gpus_per_trial_than_the_cluster_is_exit_2(tmp_path, data_dir):
    spec = _spec(tmp_path, data_dir).read_text().replace("gpus_per_trial = 2",
                                                         "gpus_per_trial = 64")
    (tmp_path / "big.toml").write_text(spec)
    result = run_cli("launch", str(tmp_path / "big.toml"), "--results-dir", str(tmp_path / "r"))
    assert result.code == 2, result.stderr
    assert "gpus_per_trial = 64" in result.error_lines[-1]
    assert not list((tmp_path / "r").glob("trials/*/*.parquet"))


def test_imagenet_specs_validate_with_dry_run_and_render_for_slurm(tmp_path, data_dir,
                                                                   monkeypatch):
    from qgen_sweep.trial.archs import ARCHS
    from qgen_sweep.trial.weights import hub_checkpoints, published_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("QGEN_DATA_DIR", str(data_dir))
    hub_checkpoints().mkdir(parents=True)
    missing = run_cli("launch", "imagenet-finetune", "--dry-run", "--results-dir",
                      str(tmp_path / "r"))
    assert missing.code == 2 and len(missing.error_lines) == 1
    assert "published ImageNet weights not found" in missing.error_lines[-1]
    for arch in ARCHS.values():
        if arch.torchvision:
            (hub_checkpoints() / published_file(arch.name)).write_bytes(b"weights")
    for name, trials in (("imagenet-finetune", 12), ("imagenet-vit", 8)):
        result = run_cli("launch", name, "--dry-run", "--results-dir", str(tmp_path / name))
        assert result.code == 0, result.stderr
        assert f"{trials} trials planned" in result.stdout
        script = run_cli("slurm", name, "--nodes", "2", "--print", "--results-dir",
                         str(tmp_path / name))
        assert script.code == 0 and "#SBATCH --gpus-per-node=4" in script.stdout
    small = run_cli("slurm", "imagenet-vit", "--gpus-per-node", "2", "--print")
    assert small.code == 2 and "gpus_per_trial = 4" in small.error_lines[-1]
