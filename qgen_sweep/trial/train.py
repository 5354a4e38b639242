"""Train one trial: TrialConfig -> trained model -> TrialResult (docs/ARCHITECTURE.md contract).

Protocol (science.md, paper appendix B.3): cross-entropy, SGD (momentum) / Adam / RMSProp with
weight decay (not on LSQ step sizes), MultiStep schedule. The model kept is the one with the
lowest epoch training loss; it is then evaluated in eval mode on the full clean splits.

Checkpoints (with a checkpoint_dir): init.pt (weights at initialisation), last.pt (full training
state after every epoch), best.pt (kept model). All written atomically; a trial with a last.pt
continues from it and ends with exactly the metrics of an uninterrupted run, because the batch
order and augmentation of each epoch are a pure function of (seed, epoch).

Step performance: the step reads nothing back to the host (epoch loss
and accuracy are summed on the device and read once per epoch; tests/test_trial_fast.py checks
it); shapes are static (the ragged last batch is dropped, so an epoch is floor(n / batch) steps of
the same shape and every example is seen once per epoch except the n mod batch left out by that
epoch's permutation); `runtime.channels_last`, bf16 autocast (`config.amp`, quantizer and loss in
fp32) and `runtime.compile` (torch.compile of the model, mode selectable; the optimizer step stays
eager, where a Python-float learning rate costs neither a host sync nor a recompilation; the fused
engine holds it as a device tensor) are options. `runtime.dtype = "float64"` exists for exactness
tests on the CPU.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qgen_sweep.atomic import atomic_open
from qgen_sweep.errors import QGenError, UsageError
from qgen_sweep.trial.config import EpochMetrics, TrialConfig, TrialResult, TrialRuntime
from qgen_sweep.trial.data import (
    Dataset,
    DatasetInfo,
    batch_indices,
    crop_flip,
    epoch_generator,
    load_dataset,
    resolve_device,
)
from qgen_sweep.trial.lsq import MIN_STEP_SIZE, LSQWeight, lsq_layers, step_sizes, weight_layers
from qgen_sweep.trial.models import build_model

CHECKPOINT_VERSION = 1


# ----------------------------------------------------------------------------- public API


def run_trial(
    config: TrialConfig,
    runtime: TrialRuntime = TrialRuntime(),
    checkpoint_dir: Path | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
) -> TrialResult:
    """Train `config` to the end (or to divergence) and evaluate the kept model.

    Continues from checkpoint_dir/last.pt when it exists. Exceptions raised by `on_epoch`
    propagate (after that epoch's checkpoint is on disk).
    """
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    device = resolve_device(runtime.device)
    data = with_dtype(load_dataset(config.dataset, runtime), runtime_dtype(runtime))
    state = _TrainState.create(config, runtime, data, device)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
        if (ckpt / "last.pt").is_file():
            state.restore(ckpt / "last.pt")
        elif not (ckpt / "init.pt").is_file():
            _save_weights(ckpt / "init.pt", state.model, 0, config, data.info)
    while state.epoch < config.epochs and state.diverged_epoch is None:
        metrics = state.train_epoch()
        if ckpt is not None:
            state.save(ckpt)
        if on_epoch is not None:
            on_epoch(metrics)
    return state.finish()


def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (fraction) of `model` on (x, y) in eval mode.

    The model's train/eval mode is restored afterwards. One host sync for the whole pass.
    """
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = at_least_fp32(model(x[start : start + batch_size]))
            target = y[start : start + batch_size]
            loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
            correct += (logits.argmax(dim=1) == target).sum()
    model.train(was_training)
    n = max(len(x), 1)
    return float(loss_sum) / n, int(correct) / n


def load_model(
    checkpoint_dir: Path, config: TrialConfig, which: str = "best", device: str = "cpu"
) -> tuple[nn.Module, DatasetInfo]:
    """Rebuild the model of `config` with the weights of init.pt or best.pt in checkpoint_dir."""
    if which not in ("best", "init"):
        raise QGenError(f"which must be 'best' or 'init', but got {which!r}")
    path = Path(checkpoint_dir) / f"{which}.pt"
    if not path.is_file():
        raise QGenError(f"no checkpoint {path}; run the trial with this checkpoint directory first")
    payload = torch.load(path, map_location=device, weights_only=True)
    _check_config(payload, config, path)
    info = DatasetInfo(**{**payload["dataset"], "mean": tuple(payload["dataset"]["mean"]),
                          "std": tuple(payload["dataset"]["std"])})
    model = build_model(config, info.in_channels, info.num_classes, info.image_size,
                        pretrained=False).to(device)
    model.load_state_dict(payload["model"])
    model.eval()
    return model, info


def l2_norm(model: nn.Module) -> float:
    """L2 norm of all conv and linear weights as the model computes with them (q * s for LSQ
    layers; no biases, BN parameters or step sizes), paper Table 2."""
    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for conv in weight_layers(model):
            weight = conv.quantized_weight() if isinstance(conv, LSQWeight) else conv.weight
            total += weight.detach().double().pow(2).sum().cpu()
    return math.sqrt(float(total))


# ----------------------------------------------------------------------------- internals


def _make_optimizer(config: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Weights (conv, bias, BN) with weight decay; LSQ step sizes in their own group without it
    and with lr x step_size_lr_scale (science.md open choice, recorded in the config)."""
    step_ids = {id(layer.step_size) for _, layer in lsq_layers(model)}
    weights = [p for p in model.parameters() if id(p) not in step_ids]
    steps = [p for p in model.parameters() if id(p) in step_ids]
    groups: list[dict[str, Any]] = [{"params": weights, "weight_decay": config.weight_decay}]
    if steps:
        groups.append(
            {"params": steps, "weight_decay": 0.0, "lr": config.lr * config.step_size_lr_scale}
        )
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.RMSprop(groups, lr=config.lr)


def load_checkpoint(path: Path, label: str, way_out: str) -> dict[str, Any]:
    """torch.load a training-state file; a torn or foreign file is a one-line QGenError that
    names the file (`label` says which kind) and `way_out`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a torn or foreign file: say which and how to recover
        raise QGenError(f"{label} {path} does not load ({error}); {way_out}") from error


def _atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then os.replace (never a torn file)."""
    with atomic_open(path) as handle:
        torch.save(obj, handle)


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _save_weights(
    path: Path, model: nn.Module, epoch: int, config: TrialConfig, info: DatasetInfo
) -> None:
    payload = {
        "version": CHECKPOINT_VERSION,
        "model": _cpu_state(model),
        "epoch": epoch,
        "config": config.to_dict(),
        "dataset": dataclasses.asdict(info),
    }
    _atomic_save(payload, path)


def _check_config(payload: dict[str, Any], config: TrialConfig, path: Path) -> None:
    if payload.get("config") != config.to_dict():
        raise QGenError(
            f"checkpoint {path} belongs to a different trial config; delete its folder or use "
            "another checkpoint directory"
        )


class _TrainState:
    """Everything that evolves during training; saved to / restored from last.pt."""

    def __init__(self, config: TrialConfig, runtime: TrialRuntime, data: Dataset,
                 device: torch.device, model: nn.Module) -> None:
        self.config, self.runtime, self.data, self.device = config, runtime, data, device
        self.model = model
        self.optimizer = _make_optimizer(config, model)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(config.milestones), gamma=config.gamma
        )
        self.forward = _compiled(model, runtime)
        self.step_sizes = [layer.step_size for _, layer in lsq_layers(model)]
        self.epoch = 0
        self.history: list[EpochMetrics] = []
        self.best_state: dict[str, Tensor] | None = None
        self.best_epoch = 0
        self.best_loss = math.inf
        self.diverged_epoch: int | None = None
        self.seconds = 0.0

    @classmethod
    def create(cls, config: TrialConfig, runtime: TrialRuntime, data: Dataset,
               device: torch.device) -> _TrainState:
        torch.manual_seed(config.seed)  # model initialisation is a function of the seed alone
        model = build_model(config, data.in_channels, data.num_classes, data.image_size)
        model = model.to(device=device, dtype=runtime_dtype(runtime))
        if runtime.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return cls(config, runtime, data, device, model)

    def _autocast(self) -> Any:
        if self.config.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def train_epoch(self) -> EpochMetrics:
        """One pass over the training split; the loss is read from the device once, at the end."""
        started = time.perf_counter()
        self.epoch += 1
        self.model.train()
        generator = epoch_generator(self.config.seed, self.epoch, self.device)
        batches = batch_indices(len(self.data.train_x), self.config.batch_size, generator)
        # Summed on the device, read once per epoch (no host sync inside the step).
        loss_sum = torch.zeros((), dtype=accumulator_dtype(self.data), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        lr = self.optimizer.param_groups[0]["lr"]
        for idx in batches:
            loss, hits = self._step(idx, generator)
            loss_sum += loss
            correct += hits
        self.scheduler.step()
        steps = len(batches)
        train_loss = float(loss_sum) / steps
        train_acc = int(correct) / (steps * batches.shape[1])
        if not math.isfinite(train_loss):
            self.diverged_epoch = self.epoch
        elif train_loss < self.best_loss:
            self.best_loss, self.best_epoch = train_loss, self.epoch
            self.best_state = _cpu_state(self.model)
        metrics = self._epoch_metrics(train_loss, train_acc, lr, time.perf_counter() - started)
        self.history.append(metrics)
        self.seconds += metrics.seconds
        return metrics

    def _step(self, idx: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        x, y = self.data.train_x[idx], self.data.train_y[idx]
        if self.config.augment == "crop-flip":
            x = crop_flip(x, generator)
        if self.runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            logits = self.forward(x)
        loss = F.cross_entropy(at_least_fp32(logits), y)
        objective = loss
        if self.config.bin_regularizer:  # VVTQ's bin regularizer (trial/vvtq.py)
            from qgen_sweep.trial.vvtq import bin_regularizer

            objective = loss + self.config.bin_regularizer * bin_regularizer(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        if self.step_sizes:  # keep LSQ step sizes positive (science.md)
            with torch.no_grad():
                torch._foreach_clamp_min_(self.step_sizes, MIN_STEP_SIZE)
        return loss.detach(), (logits.detach().argmax(dim=1) == y).sum()

    def _epoch_metrics(self, loss: float, acc: float, lr: float, seconds: float) -> EpochMetrics:
        every = self.runtime.eval_test_every
        test_loss = test_acc = math.nan
        if self.diverged_epoch is None and every > 0 and self.epoch % every == 0:
            test_loss, test_acc = evaluate(
                self.model, self.data.test_x, self.data.test_y, self.runtime.eval_batch_size
            )
        summary = (math.nan, math.nan, math.nan)
        if self.step_sizes:
            stacked = torch.stack([s.detach() for s in self.step_sizes]).float().cpu()
            summary = (float(stacked.min()), float(stacked.mean()), float(stacked.max()))
        return EpochMetrics(
            epoch=self.epoch, train_loss=loss, train_acc=acc, lr=lr, seconds=seconds,
            test_loss=test_loss, test_acc=test_acc, step_size_min=summary[0],
            step_size_mean=summary[1], step_size_max=summary[2],
        )

    # -- checkpoints

    def save(self, folder: Path) -> None:
        """Write last.pt (and best.pt when this epoch became the kept model)."""
        if self.best_epoch == self.epoch and self.best_state is not None:
            payload = {"version": CHECKPOINT_VERSION, "model": self.best_state,
                       "epoch": self.best_epoch, "train_loss": self.best_loss,
                       "config": self.config.to_dict(),
                       "dataset": dataclasses.asdict(self.data.info)}
            _atomic_save(payload, folder / "best.pt")
        _atomic_save(self._payload(), folder / "last.pt")

    def _payload(self) -> dict[str, Any]:
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "dataset": dataclasses.asdict(self.data.info),
            "epoch": self.epoch,
            "model": _cpu_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "best": {"model": self.best_state, "epoch": self.best_epoch, "loss": self.best_loss},
            "diverged_epoch": self.diverged_epoch,
            "history": [dataclasses.asdict(m) for m in self.history],
            "seconds": self.seconds,
        }

    def restore(self, path: Path) -> None:
        """Continue from last.pt: model, optimizer, scheduler, RNG, best-so-far, history."""
        payload = load_checkpoint(path, "checkpoint", "delete it to restart the trial")
        _check_config(payload, self.config, path)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["rng"]["cpu"])
        if "cuda" in payload["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
        best = payload["best"]
        self.best_state, self.best_epoch = best["model"], best["epoch"]
        self.best_loss = best["loss"]
        self.epoch = payload["epoch"]
        self.diverged_epoch = payload["diverged_epoch"]
        self.history = [EpochMetrics(**m) for m in payload["history"]]
        self.seconds = payload["seconds"]

    # -- the end

    def finish(self) -> TrialResult:
        """Evaluate the kept model on the clean splits (NaN metrics when there is none)."""
        status = "diverged" if self.diverged_epoch is not None else "done"
        nan = math.nan
        train_loss = train_acc = test_loss = test_acc = norm = nan
        sizes: dict[str, float] = {}
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            data, batch = self.data, self.runtime.eval_batch_size
            train_loss, train_acc = evaluate(self.model, data.train_x, data.train_y, batch)
            test_loss, test_acc = evaluate(self.model, data.test_x, data.test_y, batch)
            norm = l2_norm(self.model)
            sizes = step_sizes(self.model)
        return TrialResult(
            status=status, train_acc=train_acc, test_acc=test_acc, train_loss=train_loss,
            test_loss=test_loss, gap=test_loss - train_loss, l2_norm=norm,
            best_epoch=self.best_epoch, epochs_run=self.epoch, seconds=self.seconds,
            device=str(self.device), diverged_epoch=self.diverged_epoch, step_sizes=sizes,
            history=tuple(self.history),
        )


DTYPES = {"float32": torch.float32, "float64": torch.float64}  # keys: config.RUNTIME_DTYPES


def runtime_dtype(runtime: TrialRuntime) -> torch.dtype:
    """Parameter and data dtype of `runtime` (float64 only for exactness tests on the CPU)."""
    if runtime.dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, but got {runtime.dtype!r}")
    return DTYPES[runtime.dtype]


def with_dtype(data: Dataset, dtype: torch.dtype) -> Dataset:
    """`data` with its images in `dtype` (labels stay int64)."""
    if data.train_x.dtype == dtype:
        return data
    return dataclasses.replace(data, train_x=data.train_x.to(dtype), test_x=data.test_x.to(dtype))


def at_least_fp32(x: Tensor) -> Tensor:
    """bf16 logits (autocast) -> fp32 for the loss; fp32 and fp64 stay as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def accumulator_dtype(data: Dataset) -> torch.dtype:
    """Epoch loss sums: fp32, or fp64 for fp64 runs."""
    return torch.promote_types(data.train_x.dtype, torch.float32)


def _compiled(model: nn.Module, runtime: TrialRuntime) -> Callable[[Tensor], Tensor]:
    if runtime.compile:
        return torch.compile(model, mode=runtime.compile)
    return model

