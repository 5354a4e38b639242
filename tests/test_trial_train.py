"""The single-trial engine on real digits data, on the CPU: accuracy, Int2 vs FP32, resume,
divergence, checkpoints and load_model."""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import pytest
import torch

from qgen_sweep.errors import QGenError
from qgen_sweep.trial.config import EpochMetrics, TrialConfig, TrialRuntime
from qgen_sweep.trial.data import load_dataset
from qgen_sweep.trial.lsq import LSQConv2d
from qgen_sweep.trial.train import _make_optimizer, evaluate, l2_norm, load_model, run_trial

RUNTIME = TrialRuntime(device="cpu", threads=1)
# A small digits NiN: 16 channels, 2 blocks; ~1 s for 15 epochs on one core.
DIGITS = TrialConfig(dataset="digits", bits=32, optimizer="sgd", lr=0.05, weight_decay=1e-4,
                     depth=2, width=2, base_width=8, epochs=15, milestones=(10,))


def _without_seconds(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "seconds"}


def _history(result) -> list[dict]:  # noqa: ANN001
    return [_without_seconds(dataclasses.asdict(m)) for m in result.history]


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.fixture(scope="module")
def fp32_and_int2() -> tuple:
    started = time.perf_counter()
    fp32 = run_trial(DIGITS, RUNTIME)
    fp32_seconds = time.perf_counter() - started
    int2 = run_trial(dataclasses.replace(DIGITS, bits=2), RUNTIME)
    return fp32, fp32_seconds, int2


def test_fp32_digits_reaches_90_percent_in_under_a_minute(fp32_and_int2: tuple) -> None:
    fp32, seconds, _ = fp32_and_int2
    assert seconds < 60
    assert fp32.status == "done" and fp32.diverged_epoch is None
    assert fp32.test_acc >= 0.90
    assert fp32.epochs_run == 15 and len(fp32.history) == 15
    assert [m.epoch for m in fp32.history] == list(range(1, 16))
    assert fp32.step_sizes == {}
    assert all(math.isnan(m.step_size_min) for m in fp32.history)
    # The kept model is the epoch with the lowest training loss.
    best = min(fp32.history, key=lambda m: m.train_loss)
    assert fp32.best_epoch == best.epoch
    assert fp32.gap == pytest.approx(fp32.test_loss - fp32.train_loss)
    assert 0 <= fp32.train_acc <= 1 and 0 <= fp32.test_acc <= 1
    # MultiStep: lr 0.05 for epochs 1..10, then x 0.1
    assert [m.lr for m in fp32.history[9:11]] == pytest.approx([0.05, 0.005])


def test_int2_trains_with_higher_training_loss_than_its_fp32_twin(fp32_and_int2: tuple) -> None:
    fp32, _, int2 = fp32_and_int2
    assert int2.status == "done"
    assert math.isfinite(int2.train_loss) and int2.test_acc > 0.5  # it did learn
    assert int2.train_loss > fp32.train_loss
    # Seven convs (2 blocks x 3 + head), each with a learned, positive step size.
    assert len(int2.step_sizes) == 7 and all(s > 0 for s in int2.step_sizes.values())
    assert all(m.step_size_min > 0 for m in int2.history)


def test_interrupted_and_resumed_trial_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    config = dataclasses.replace(DIGITS, bits=4, epochs=6, milestones=(4,), augment="crop-flip")
    whole = run_trial(config, RUNTIME)

    class Interrupt(Exception):
        pass

    def stop_after_three(metrics: EpochMetrics) -> None:
        # on_epoch runs after the epoch's checkpoint is on disk
        last = torch.load(tmp_path / "last.pt", weights_only=True)
        assert last["epoch"] == metrics.epoch
        if metrics.epoch == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_trial(config, RUNTIME, tmp_path, on_epoch=stop_after_three)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 3
    seen: list[int] = []
    resumed = run_trial(config, RUNTIME, tmp_path, on_epoch=lambda m: seen.append(m.epoch))

    assert seen == [4, 5, 6]
    assert _without_seconds(resumed.metrics()) == _without_seconds(whole.metrics())
    assert _history(resumed) == _history(whole)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == whole.best_epoch


def test_checkpoints_and_load_model(tmp_path: Path) -> None:
    config = dataclasses.replace(DIGITS, bits=4, epochs=3)
    result = run_trial(config, RUNTIME, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"init.pt", "last.pt", "best.pt"}
    best, info = load_model(tmp_path, config, "best")
    init, _ = load_model(tmp_path, config, "init")
    assert (info.in_channels, info.num_classes, info.name) == (1, 10, "digits")
    assert not best.training
    data = load_dataset("digits", RUNTIME)
    loss, acc = evaluate(best, data.train_x, data.train_y, batch_size=100)
    assert loss == pytest.approx(result.train_loss, rel=1e-6)
    assert acc == pytest.approx(result.train_acc)
    assert l2_norm(best) == pytest.approx(result.l2_norm, rel=1e-6)
    # init.pt holds the weights at initialisation: the seed's model, before any step.
    torch.manual_seed(config.seed)
    from qgen_sweep.trial.models import build_model

    fresh = build_model(config, 1, 10)
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(init.state_dict()[name], tensor), name
    assert not torch.equal(init.layers[0].weight, best.layers[0].weight)
    # A rerun of a finished trial trains nothing and reports the same result.
    again = run_trial(config, RUNTIME, tmp_path, on_epoch=lambda m: pytest.fail("trained"))
    assert _without_seconds(again.metrics()) == _without_seconds(result.metrics())


def test_checkpoint_of_another_config_is_refused(tmp_path: Path) -> None:
    config = dataclasses.replace(DIGITS, epochs=1)
    run_trial(config, RUNTIME, tmp_path)
    other = dataclasses.replace(config, lr=0.01)
    with pytest.raises(QGenError, match="different trial config"):
        run_trial(other, RUNTIME, tmp_path)
    with pytest.raises(QGenError, match="different trial config"):
        load_model(tmp_path, other)
    with pytest.raises(QGenError, match="no checkpoint"):
        load_model(tmp_path / "nowhere", config)


def test_divergence_from_the_first_epoch_is_a_result(tmp_path: Path) -> None:
    config = dataclasses.replace(DIGITS, lr=1e30, epochs=4)
    result = run_trial(config, RUNTIME, tmp_path)
    assert result.status == "diverged" and result.diverged_epoch == 1
    assert result.best_epoch == 0 and result.epochs_run == 1
    assert math.isnan(result.train_loss) and math.isnan(result.test_acc)
    assert math.isnan(result.history[0].train_loss)


def test_divergence_later_keeps_the_best_model_so_far(tmp_path: Path) -> None:
    # lr x 1e30 from epoch 3 on: epochs 1-2 train, epoch 3 blows up.
    config = dataclasses.replace(DIGITS, bits=2, epochs=5, milestones=(2,), gamma=1e30)
    result = run_trial(config, RUNTIME, tmp_path)
    assert result.status == "diverged" and result.diverged_epoch == 3
    assert result.epochs_run == 3 and result.best_epoch == 2
    assert math.isfinite(result.train_loss) and math.isfinite(result.test_loss)
    assert result.train_loss < math.log(10)  # better than chance: the epoch-2 model
    again = run_trial(config, RUNTIME, tmp_path, on_epoch=lambda m: pytest.fail("trained"))
    assert again.status == "diverged" and again.diverged_epoch == 3
    assert _same(again.train_loss, result.train_loss)


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_other_optimizers_and_step_size_group(optimizer: str) -> None:
    config = dataclasses.replace(DIGITS, bits=4, optimizer=optimizer, lr=1e-3, epochs=2,
                                 step_size_lr_scale=0.5)
    result = run_trial(config, RUNTIME)
    assert result.status == "done"
    assert result.history[1].train_loss < result.history[0].train_loss

    torch.manual_seed(0)
    from qgen_sweep.trial.models import build_model

    model = build_model(config, 1, 10)
    weights, steps = _make_optimizer(config, model).param_groups
    lsq = [m for m in model.modules() if isinstance(m, LSQConv2d)]
    assert {id(p) for p in steps["params"]} == {id(m.step_size) for m in lsq}
    assert steps["weight_decay"] == 0.0 and steps["lr"] == pytest.approx(5e-4)
    assert weights["weight_decay"] == config.weight_decay and weights["lr"] == 1e-3


def test_bf16_autocast_runs_with_fp32_quantizer() -> None:
    config = dataclasses.replace(DIGITS, bits=8, amp="bf16", epochs=2)
    result = run_trial(config, RUNTIME)
    assert result.status == "done" and math.isfinite(result.train_loss)


def test_evaluate_restores_training_mode() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    model.train()
    x, y = torch.randn(7, 1, 8, 8), torch.randint(0, 10, (7,))
    loss, acc = evaluate(model, x, y, batch_size=3)
    assert model.training
    expected = torch.nn.functional.cross_entropy(model(x), y).item()
    assert loss == pytest.approx(expected, rel=1e-5)
    assert acc == pytest.approx((model(x).argmax(1) == y).float().mean().item())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_trial_with_bf16_and_channels_last(tmp_path: Path) -> None:
    runtime = TrialRuntime(device="cuda", channels_last=True)
    fp32 = run_trial(DIGITS, runtime)
    assert fp32.device.startswith("cuda") and fp32.test_acc >= 0.90
    int4 = run_trial(dataclasses.replace(DIGITS, bits=4, amp="bf16"), runtime, tmp_path)
    assert int4.status == "done" and int4.test_acc > 0.8
    model, _ = load_model(tmp_path, dataclasses.replace(DIGITS, bits=4, amp="bf16"))
    assert all(layer.step_size.dtype == torch.float32
               for layer in model.modules() if isinstance(layer, LSQConv2d))
