"""Train one trial: TrialConfig -> trained model -> TrialResult (docs/ARCHITECTURE.md contract).

The protocol (docs/science.md, paper appendix B.3) lives in protocol.py; this module gives it a
`SingleLearner`: one model of any registered arch, one torch optimizer (SGD with momentum / Adam
/ RMSProp, weight decay on everything but the LSQ step sizes, which have their own group at
lr x step_size_lr_scale) and a MultiStep schedule.

Step performance (performance.md): the step reads nothing back to the host (the protocol sums
losses and hits on the device; tests/test_trial_fast.py checks it); shapes are static (the ragged
last batch is dropped); `runtime.channels_last`, bf16 autocast (`config.amp`, quantizer and loss
in fp32) and `runtime.compile` (torch.compile of the model, mode selectable; the optimizer step
stays eager, where a Python-float learning rate costs neither a host sync nor a recompilation)
are options. `runtime.dtype = "float64"` exists for exactness tests on the CPU.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qgen_sweep.errors import QGenError, UsageError
from qgen_sweep.trial.config import EpochMetrics, TrialConfig, TrialResult, TrialRuntime
from qgen_sweep.trial.data import Dataset, DatasetInfo, data_root, load_dataset, resolve_device
from qgen_sweep.trial.lsq import MIN_STEP_SIZE, lsq_layers
from qgen_sweep.trial.memory import check_fits
from qgen_sweep.trial.models import build_model, l2_norm
from qgen_sweep.trial.parallel import World, barrier, current_world, global_batch_norm, wrap
from qgen_sweep.trial.protocol import (
    CHECKPOINT_VERSION,
    Training,
    at_least_fp32,
    atomic_save,
    load_checkpoint,
)
from qgen_sweep.trial.stream import ImageFolderSource

__all__ = ["CHECKPOINT_VERSION", "atomic_save", "evaluate", "l2_norm", "load_checkpoint",
           "load_model", "run_trial"]


# ----------------------------------------------------------------------------- public API


def run_trial(
    config: TrialConfig,
    runtime: TrialRuntime = TrialRuntime(),
    checkpoint_dir: Path | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
) -> TrialResult:
    """Train `config` to the end (or to divergence) and evaluate the kept model.

    Continues from checkpoint_dir/last.pt when it exists (an unreadable one is moved aside and
    CheckpointUnreadable raised: the next call starts afresh). Exceptions raised by `on_epoch`
    propagate (after that epoch's checkpoint is on disk).
    """
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    device = resolve_device(runtime.device)
    check_fits([config], device, runtime)  # before anything is allocated
    world = current_world()  # a data-parallel trial: one of several ranks (trial/parallel.py)
    data = open_data(config, runtime, device)
    learner = SingleLearner(config, runtime, data, device, world)
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    training = Training(learner, data, runtime, last=ckpt / "last.pt" if ckpt else None,
                        folders=[ckpt] if ckpt else None, world=world)
    callback = None if on_epoch is None else (lambda by_id: on_epoch(by_id[config.trial_id]))
    return training.run(callback)[0]


def open_data(config: TrialConfig, runtime: TrialRuntime,
              device: torch.device) -> Dataset | ImageFolderSource:
    """The trial's data: resident tensors (cifar, digits) or the imagenet streaming source."""
    if config.dataset == "imagenet":
        from qgen_sweep.trial.stream import open_imagenet

        return open_imagenet(data_root(runtime), config.image_size, device,
                             runtime.data_workers, runtime.decode, runtime_dtype(runtime))
    return with_dtype(load_dataset(config.dataset, runtime), runtime_dtype(runtime))


def evaluate_sums(model: nn.Module,
                  batches: Iterator[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """(summed cross-entropy, correct, count) of `model` over streamed batches, eval mode (the
    caller divides, after summing over data-parallel ranks)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    with torch.no_grad():
        for x, y in batches:
            logits = at_least_fp32(model(x))
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(dim=1) == y).sum()
            count += len(y)
    model.train(was_training)
    return loss_sum, correct, count


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
    payload = load_checkpoint(path, "checkpoint", "rerun the trial to write it again")
    if payload.get("config") != config.to_dict():
        raise QGenError(f"checkpoint {path} belongs to a different trial config; delete its "
                        "folder or use another checkpoint directory")
    info = DatasetInfo(**{**payload["dataset"], "mean": tuple(payload["dataset"]["mean"]),
                          "std": tuple(payload["dataset"]["std"])})
    model = build_model(config, info.in_channels, info.num_classes, info.image_size,
                        pretrained=False).to(device)
    model.load_state_dict(payload["model"])
    model.eval()
    return model, info


# ----------------------------------------------------------------------------- the learner


def _make_optimizer(config: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Weights (conv, linear, bias, BN) with weight decay; LSQ step sizes in their own group
    without it and with lr x step_size_lr_scale (an open choice, recorded in the config)."""
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


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class SingleLearner:
    """One model and its torch optimizer and schedule, for the protocol (K = 1)."""

    def __init__(self, config: TrialConfig, runtime: TrialRuntime,
                 data: Dataset | ImageFolderSource, device: torch.device,
                 world: World = World()) -> None:
        if world.parallel and config.batch_size % world.size:
            raise UsageError(f"batch_size {config.batch_size} must divide by the {world.size} "
                             f"data-parallel workers of the trial; change "
                             f"resources.gpus_per_trial or train.batch_size")
        if config.pretrained == "torchvision" and runtime.download and world.main:
            from qgen_sweep.trial.pretrained import fetch_torchvision

            fetch_torchvision(config)  # into torch.hub's cache, where the build reads it
        barrier(world)
        torch.manual_seed(config.seed)  # model initialisation is a function of the seed alone
        model = build_model(config, data.in_channels, data.num_classes, data.image_size)
        model = model.to(device=device, dtype=runtime_dtype(runtime))
        if runtime.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if world.parallel:  # batch norm over the global batch (trial/parallel.py)
            model = global_batch_norm(model, device)
        self.configs, self.config, self.device = [config], config, device
        self.model = model
        self.initial = _cpu_state(model)
        self.optimizer = _make_optimizer(config, model)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(config.milestones), gamma=config.gamma
        )
        self.forward = torch.compile(model, mode=runtime.compile) if runtime.compile else model
        if world.parallel:  # DDP averages the ranks' gradients (not compiled)
            self.forward = wrap(model, device)
        self.steps = [layer.step_size for _, layer in lsq_layers(model)]
        self.kept: dict[str, Tensor] | None = None
        self.eval_batch_size = runtime.eval_batch_size

    def _autocast(self) -> Any:
        if self.config.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def lrs(self) -> list[float]:
        return [self.optimizer.param_groups[0]["lr"]]

    def train_step(self, x: Tensor, y: Tensor, loss_sum: Tensor, correct: Tensor) -> None:
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
        if self.steps:  # keep LSQ step sizes positive (docs/science.md)
            with torch.no_grad():
                torch._foreach_clamp_min_(self.steps, MIN_STEP_SIZE)
        loss_sum += loss.detach()
        correct += (logits.detach().argmax(dim=1) == y).sum()

    def end_epoch(self, epoch: int) -> None:
        self.scheduler.step()

    def freeze(self, member: int) -> None:
        """Nothing to do: a single trial ends when it diverges."""

    def keep(self, improved: list[bool]) -> None:
        if improved[0]:
            self.kept = _cpu_state(self.model)

    def load_kept(self) -> None:
        if self.kept is not None:
            self.model.load_state_dict(self.kept)

    def evaluate(self, x: Tensor, y: Tensor) -> list[tuple[float, float]]:
        return [evaluate(self.model, x, y, self.eval_batch_size)]

    def evaluate_sums(self, batches: Iterator[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, ...]]:
        return [evaluate_sums(self.model, batches)]

    def step_size_summaries(self) -> list[tuple[float, float, float]]:
        if not self.steps:
            return [(math.nan, math.nan, math.nan)]
        stacked = torch.stack([s.detach() for s in self.steps]).float().cpu()
        return [(float(stacked.min()), float(stacked.mean()), float(stacked.max()))]

    def initial_state(self, member: int) -> dict[str, Tensor]:
        return self.initial

    def kept_state(self, member: int) -> dict[str, Tensor] | None:
        return self.kept

    def kept_model(self, member: int) -> nn.Module:
        return self.model

    def state_dict(self) -> dict[str, Any]:
        return {"model": _cpu_state(self.model), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "kept": self.kept}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.kept = state["kept"]


# ----------------------------------------------------------------------------- dtypes

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
