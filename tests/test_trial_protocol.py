"""The one training protocol: an unreadable last.pt is moved aside and the trial restarts (with a
failure row), init.pt is rewritten when it does not load, and sizes that cannot fit the device
are refused before anything is allocated."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from cli_helpers import run_cli
from sweep_helpers import failure_rows, final_rows, launch, tiny_spec, trial_ids

from qgen_sweep.errors import CheckpointUnreadable, UsageError
from qgen_sweep.store import read_attempts
from qgen_sweep.trial.bundle import run_bundle
from qgen_sweep.trial.config import TrialConfig, TrialRuntime
from qgen_sweep.trial.memory import check_fits, footprint
from qgen_sweep.trial.train import load_model, run_trial

RUNTIME = TrialRuntime(device="cpu", threads=1, eval_test_every=0)
CONFIG = TrialConfig("digits", 4, "sgd", 0.05, 1e-4, depth=1, width=1, base_width=4, epochs=3,
                     milestones=(2,))


class Stop(Exception):
    pass


def _stop_at(epoch: int):  # noqa: ANN202
    def check(metrics) -> None:  # noqa: ANN001
        if metrics.epoch == epoch:
            raise Stop

    return check


def _metrics(result) -> dict:  # noqa: ANN001
    return {k: v for k, v in result.metrics().items() if k != "seconds"}


@pytest.mark.parametrize("damage", ["empty", "truncated", "older format"])
def test_an_unreadable_last_pt_is_moved_aside_and_the_trial_restarts(tmp_path: Path,
                                                                     damage: str) -> None:
    whole = run_trial(CONFIG, RUNTIME)
    with pytest.raises(Stop):
        run_trial(CONFIG, RUNTIME, tmp_path, on_epoch=_stop_at(2))
    last = tmp_path / "last.pt"
    if damage == "empty":
        last.write_bytes(b"")
    elif damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    else:  # a readable file of the engine before the one protocol (no version 2 layout)
        torch.save({"version": 1, "epoch": 2, "config": CONFIG.to_dict()}, last)
    with pytest.raises(CheckpointUnreadable, match=r"last.pt does not load .*moved to "
                                                   r"last.pt.unreadable-1, the trial restarts"):
        run_trial(CONFIG, RUNTIME, tmp_path)
    assert not last.exists() and (tmp_path / "last.pt.unreadable-1").is_file()
    seen: list[int] = []
    again = run_trial(CONFIG, RUNTIME, tmp_path, on_epoch=lambda m: seen.append(m.epoch))
    assert seen == [1, 2, 3]  # from scratch
    assert _metrics(again) == _metrics(whole)


def test_a_damaged_init_pt_is_written_again(tmp_path: Path) -> None:
    with pytest.raises(Stop):
        run_trial(CONFIG, RUNTIME, tmp_path, on_epoch=_stop_at(1))
    fresh, _ = load_model(tmp_path, CONFIG, "init")
    (tmp_path / "init.pt").write_bytes(b"not a checkpoint")
    run_trial(CONFIG, RUNTIME, tmp_path)  # continues from last.pt, rewrites init.pt
    rewritten, _ = load_model(tmp_path, CONFIG, "init")
    for (name, a), b in zip(fresh.state_dict().items(), rewritten.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert (tmp_path / "init.pt.unreadable-1").read_bytes() == b"not a checkpoint"


def test_a_damaged_bundle_checkpoint_restarts_the_bundle(tmp_path: Path) -> None:
    configs = [CONFIG, dataclasses.replace(CONFIG, bits=32, optimizer="adam", lr=1e-3)]
    with pytest.raises(Stop):
        run_bundle(configs, RUNTIME, tmp_path, on_epoch=lambda m: _stop_at(1)(
            next(iter(m.values()))), conv_impl="grouped")
    (last,) = tmp_path.glob("bundle-*/last.pt")
    last.write_bytes(b"")
    with pytest.raises(CheckpointUnreadable, match="restarts from scratch"):
        run_bundle(configs, RUNTIME, tmp_path, conv_impl="grouped")
    results = run_bundle(configs, RUNTIME, tmp_path, conv_impl="grouped")
    assert [r.epochs_run for r in results] == [3, 3]


def test_the_runner_records_the_unreadable_checkpoint_and_finishes_the_trial(tmp_path) -> None:
    spec = tiny_spec("grid.bits=[32]", 'grid.optimizer=["sgd"]', "train.epochs=2")
    (trial_id,) = trial_ids(spec)
    root = tmp_path / "run"
    last = root / "checkpoints" / trial_id / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"")  # what a disk-full or a kill during a non-atomic copy leaves
    store = launch(spec, root, backend="local")
    (row,) = final_rows(store)
    assert row["status"] == "done" and row["epochs_run"] == 2 and row["attempts"] == 2
    (failure,) = failure_rows(store)
    assert failure["error_type"] == "CheckpointUnreadable" and failure["attempt"] == 1
    assert "moved to last.pt.unreadable-1" in failure["message"]
    assert [a["first_epoch"] for a in read_attempts(store, trial_id)] == [None, 1]


def test_sizes_that_cannot_fit_are_refused_before_allocating() -> None:
    huge = dataclasses.replace(CONFIG, base_width=100_000)
    prints = footprint(huge)  # on the meta device: counting 2e10 parameters allocates nothing
    assert prints.parameters > 2e10 and prints.activations > 1e9
    with pytest.raises(UsageError, match=r"needs at least [\d,]+ GiB on cpu .* lower "
                                         r"base_width, width or batch_size"):
        check_fits([huge], torch.device("cpu"), RUNTIME)
    check_fits([CONFIG], torch.device("cpu"), RUNTIME)  # a normal trial passes
    small = footprint(TrialConfig("cifar10", 4, "sgd", 0.1, 0.0, arch="resnet18",
                                  base_width=64, batch_size=2))
    assert small.parameters == 11_173_962  # the float network (LSQ adds only step sizes)


def test_train_refuses_a_width_that_cannot_fit_in_one_line() -> None:
    result = run_cli("train", "--dataset", "digits", "--bits", "4", "--optimizer", "sgd",
                     "--lr", "0.1", "--depth", "2", "--width", "1", "--base-width", "100000")
    assert result.code == 2 and not result.crashed
    (line,) = result.error_lines
    assert "GiB" in line and "base_width 100000" in line
