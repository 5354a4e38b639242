"""The training protocol, once, for every trial: single (train.py) or a fused bundle (bundle.py).

docs/science.md "Training protocol": each epoch is a seeded permutation of the training split, a
pure function of (seed, epoch), cut into floor(n / batch) batches of one shape; the epoch loss is
the mean of the batch losses, summed on the device and read once per epoch (no host sync inside
the step); the kept model of a member is its epoch with the lowest training loss (no test data
select it); a non-finite epoch loss ends the member as `diverged` at that epoch; the end is an
eval-mode pass of each kept model over the full clean splits.

What differs between a single trial and a bundle is only what the protocol drives: a `Learner`
(one model and torch optimizer, or K fused members and their fused optimizers). A future
data-parallel learner plugs in the same way (its train_step all-reduces; only rank 0 writes).

Checkpoints: `last` (the learner's training state plus the protocol's bookkeeping, atomically
after every epoch) and per member folder `init.pt` (weights at initialisation) and `best.pt`
(the kept model), both in the unfused state_dict format that train.load_model reads. A `last`
that exists continues the training, which then ends with exactly the results of an
uninterrupted run. One that does not load (empty, truncated, foreign, or from an older engine)
is moved aside and CheckpointUnreadable raised: the next attempt starts afresh (from the seed's
initial weights, which init.pt holds; best.pt alone lacks the optimizer state an exact
continuation needs).
"""

from __future__ import annotations

import dataclasses
import math
import time
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from qgen_sweep.atomic import atomic_open
from qgen_sweep.errors import CheckpointUnreadable, QGenError
from qgen_sweep.trial.config import EpochMetrics, TrialConfig, TrialResult, TrialRuntime
from qgen_sweep.trial.data import Dataset, batch_indices, crop_flip, epoch_generator
from qgen_sweep.trial.lsq import step_sizes
from qgen_sweep.trial.models import l2_norm
from qgen_sweep.trial.parallel import World, all_sum, barrier, shard_rows
from qgen_sweep.trial.stream import ImageFolderSource, Shard

CHECKPOINT_VERSION = 2  # 2: one layout (members, learner state) for single trials and bundles
EpochCallback = Callable[[dict[str, EpochMetrics]], None]


class Learner(Protocol):
    """K >= 1 members' models and optimizers, as the protocol drives them. Lists are per member,
    in `configs` order; members share the data order (seed, batch size, augmentation)."""

    configs: Sequence[TrialConfig]
    device: torch.device

    def lrs(self) -> list[float]:
        """Each member's learning rate for the coming epoch (host values, no device read)."""

    def train_step(self, x: Tensor, y: Tensor, loss_sum: Tensor, correct: Tensor) -> None:
        """One optimizer step of every live member on the batch; add each member's batch loss
        and correct predictions to the (K,) device sums."""

    def end_epoch(self, epoch: int) -> None:
        """The learning-rate schedule after `epoch` (1-based)."""

    def freeze(self, member: int) -> None:
        """Member `member` diverged: its parameters and optimizer state stop changing."""

    def keep(self, improved: list[bool]) -> None:
        """The kept model of each improved member becomes its current model."""

    def load_kept(self) -> None:
        """Put every member's kept model in place (before the final evaluation)."""

    def evaluate(self, x: Tensor, y: Tensor) -> list[tuple[float, float]]:
        """(mean cross-entropy, accuracy) of each member's current model, eval mode."""

    def evaluate_sums(self, batches: Iterator[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, ...]]:
        """(summed cross-entropy, correct, count) per member over streamed batches (a
        streaming source: trial/stream.py), eval mode."""

    def step_size_summaries(self) -> list[tuple[float, float, float]]:
        """(min, mean, max) LSQ step size per member (NaN for FP32 members)."""

    def initial_state(self, member: int) -> dict[str, Tensor]:
        """The member's unfused state_dict at initialisation (init.pt)."""

    def kept_state(self, member: int) -> dict[str, Tensor] | None:
        """The member's kept model as an unfused state_dict (best.pt), None before any."""

    def kept_model(self, member: int) -> nn.Module:
        """The member's kept model as a plain module (after load_kept)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything the learner needs to continue (models, optimizers, kept models)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then os.replace (never a torn file)."""
    with atomic_open(path) as handle:
        torch.save(obj, handle)


def load_checkpoint(path: Path, label: str, way_out: str) -> dict[str, Any]:
    """torch.load a checkpoint; a torn or foreign file is a one-line QGenError that names the
    file (`label` says which kind) and `way_out`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a torn or foreign file: say which and how to recover
        raise QGenError(f"{label} {path} does not load ({error}); {way_out}") from error


def move_aside(path: Path) -> Path:
    """Rename `path` to the first free `<name>.unreadable-N` next to it (kept for a post-mortem,
    never read again)."""
    n = 1
    while (target := path.with_name(f"{path.name}.unreadable-{n}")).exists():
        n += 1
    path.replace(target)
    return target


def unreadable(path: Path, error: BaseException) -> typing.NoReturn:
    """Move a checkpoint that cannot be used aside and raise CheckpointUnreadable, which the
    runner records as a failure row before it starts the trial again from scratch."""
    aside = move_aside(path)
    why = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise CheckpointUnreadable(f"checkpoint {path} does not load ({why}); moved to "
                               f"{aside.name}, the trial restarts from scratch") from error


def weights_payload(config: TrialConfig, state: dict[str, Tensor], epoch: int,
                    dataset: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The unfused init.pt / best.pt format (train.load_model reads it)."""
    return {"version": CHECKPOINT_VERSION,
            "model": {k: v.detach().to("cpu", copy=True) for k, v in state.items()},
            "epoch": epoch, **extra, "config": config.to_dict(), "dataset": dataset}


def _readable(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any failure to load means "write it again"
        return False
    return True


def at_least_fp32(x: Tensor) -> Tensor:
    """bf16 logits (autocast) -> fp32 for the loss; fp32 and fp64 stay as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@dataclasses.dataclass
class _Members:
    """The protocol's per-member bookkeeping (saved in `last` next to the learner's state)."""

    history: list[list[EpochMetrics]]
    best_loss: list[float]
    best_epoch: list[int]
    diverged_epoch: list[int | None]

    @classmethod
    def fresh(cls, k: int) -> _Members:
        return cls([[] for _ in range(k)], [math.inf] * k, [0] * k, [None] * k)


class Training:
    """The protocol over one learner: train to the end (or until every member diverged),
    checkpointing after every epoch, then evaluate every member's kept model."""

    def __init__(self, learner: Learner, data: Dataset | ImageFolderSource,
                 runtime: TrialRuntime, last: Path | None = None,
                 folders: Sequence[Path] | None = None, world: World = World()) -> None:
        self.learner, self.data, self.runtime = learner, data, runtime
        # Data-parallel (trial/parallel.py): rank `world.rank` of `world.size` trains its slice
        # of every batch; only rank 0 writes, the others wait for it at a barrier.
        self.world = world
        self.streaming = isinstance(data, ImageFolderSource)
        self.configs = list(learner.configs)
        self.k = len(self.configs)
        self.last, self.folders = last, list(folders) if folders is not None else None
        self.epoch, self.seconds = 0, 0.0
        self.members = _Members.fresh(self.k)

    # -- the loop

    def run(self, on_epoch: EpochCallback | None = None) -> list[TrialResult]:
        """Train (continuing from `last` when it exists) and return one result per member."""
        self._start()
        while self.epoch < self.configs[0].epochs and None in self.members.diverged_epoch:
            metrics = self.train_epoch()
            if self.last is not None and self.world.main:
                atomic_save(self._payload(), self.last)
            barrier(self.world)  # every rank continues once the epoch's checkpoint is on disk
            if on_epoch is not None and self.world.main:
                on_epoch(metrics)
        return self.finish()

    def train_epoch(self) -> dict[str, EpochMetrics]:
        """One pass over the training split; the per-member sums are read once, at the end."""
        started = time.perf_counter()
        self.epoch += 1
        config, device = self.configs[0], self.learner.device
        loss_sum = torch.zeros(self.k, dtype=self._sum_dtype(), device=device)
        correct = torch.zeros(self.k, dtype=torch.int64, device=device)
        training = [d is None for d in self.members.diverged_epoch]
        lrs = self.learner.lrs()
        steps = 0
        for x, y in self._batches():
            if self.runtime.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            self.learner.train_step(x, y, loss_sum, correct)
            steps += 1
        self.learner.end_epoch(self.epoch)
        if self.world.parallel:  # each rank summed its slices' mean losses
            loss_sum, correct = all_sum(loss_sum / self.world.size, correct)
        seconds = time.perf_counter() - started
        batch = min(config.batch_size, self._train_size())
        losses = [total / steps for total in loss_sum.tolist()]
        accs = [hits / (steps * batch) for hits in correct.tolist()]
        self.learner.keep(self._record(losses, training))
        self.seconds += seconds
        return self._epoch_metrics(losses, accs, lrs, training, seconds)

    def _sum_dtype(self) -> torch.dtype:
        """Epoch sums: fp32, fp64 for fp64 runs (the data's dtype)."""
        dtype = self.data.dtype if self.streaming else self.data.train_x.dtype
        return torch.promote_types(dtype, torch.float32)

    def _train_size(self) -> int:
        return len(self.data.train) if self.streaming else len(self.data.train_x)

    def _batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        """This rank's part of each batch of the epoch. Every rank draws the same global batch
        order and augmentation, a pure function of (seed, epoch)."""
        config, world = self.configs[0], self.world
        augment = config.augment == "crop-flip"
        if self.streaming:  # the file order lives on the host: a CPU generator
            generator = epoch_generator(config.seed, self.epoch, torch.device("cpu"))
            yield from self.data.train_batches(generator, config.batch_size, augment,
                                               Shard(world.rank, world.size))
            return
        data = self.data
        generator = epoch_generator(config.seed, self.epoch, self.learner.device)
        for idx in batch_indices(len(data.train_x), config.batch_size, generator):
            x, y = data.train_x[idx], data.train_y[idx]
            if augment:
                x = crop_flip(x, generator)
            yield shard_rows(x, world), shard_rows(y, world)

    def _evaluate(self, split: str) -> list[tuple[float, float]]:
        """(mean loss, accuracy) per member on a clean split ("train" / "test")."""
        if not self.streaming:
            data = self.data
            x, y = (data.train_x, data.train_y) if split == "train" else (data.test_x,
                                                                          data.test_y)
            return self.learner.evaluate(x, y)
        shard = Shard(self.world.rank, self.world.size)
        batches = self.data.eval_batches("train" if split == "train" else "val",
                                         self.runtime.eval_batch_size, shard)
        out = []
        for loss, correct, n in self.learner.evaluate_sums(batches):
            if self.world.parallel:
                loss, correct, n = all_sum(loss, correct, n)
            count = max(int(n), 1)
            out.append((float(loss) / count, int(correct) / count))
        return out

    def _record(self, losses: list[float], training: list[bool]) -> list[bool]:
        """Divergence and kept-model bookkeeping; returns which members improved."""
        improved = [False] * self.k
        m = self.members
        for i, loss in enumerate(losses):
            if not training[i]:
                continue
            if not math.isfinite(loss):
                m.diverged_epoch[i] = self.epoch
                self.learner.freeze(i)
            elif loss < m.best_loss[i]:
                m.best_loss[i], m.best_epoch[i] = loss, self.epoch
                improved[i] = True
        return improved

    def _epoch_metrics(self, losses: list[float], accs: list[float], lrs: list[float],
                       training: list[bool], seconds: float) -> dict[str, EpochMetrics]:
        every, nan = self.runtime.eval_test_every, math.nan
        alive = [d is None for d in self.members.diverged_epoch]
        test = [(nan, nan)] * self.k
        if every > 0 and self.epoch % every == 0 and any(alive):
            test = self._evaluate("test")
        sizes = self.learner.step_size_summaries()
        out: dict[str, EpochMetrics] = {}
        for i, config in enumerate(self.configs):
            if not training[i]:
                continue
            test_loss, test_acc = test[i] if alive[i] else (nan, nan)
            metrics = EpochMetrics(
                epoch=self.epoch, train_loss=losses[i], train_acc=accs[i], lr=lrs[i],
                seconds=seconds, test_loss=test_loss, test_acc=test_acc,
                step_size_min=sizes[i][0], step_size_mean=sizes[i][1], step_size_max=sizes[i][2],
            )
            self.members.history[i].append(metrics)
            out[config.trial_id] = metrics
        return out

    # -- checkpoints

    def _start(self) -> None:
        """Write each member's init.pt (again, when it does not load), then continue from
        `last` when there is one. The learner still holds the seed's initial weights here."""
        for i, folder in enumerate((self.folders or []) if self.world.main else []):
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "init.pt"
            if path.is_file() and not _readable(path):
                move_aside(path)
            if not path.is_file():
                atomic_save(self._weights(i, self.learner.initial_state(i), 0), path)
        barrier(self.world)  # init.pt is on disk before any rank goes on
        if self.last is not None:
            self.last.parent.mkdir(parents=True, exist_ok=True)
            if self.last.is_file():
                self._restore(self.last)

    def _weights(self, i: int, state: dict[str, Tensor], epoch: int,
                 **extra: Any) -> dict[str, Any]:
        return weights_payload(self.configs[i], state, epoch,
                               dataclasses.asdict(self.data.info), **extra)

    def _payload(self) -> dict[str, Any]:
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        m = self.members
        return {
            "version": CHECKPOINT_VERSION,
            "members": [c.to_dict() for c in self.configs],
            "dataset": dataclasses.asdict(self.data.info),
            "epoch": self.epoch,
            "seconds": self.seconds,
            "rng": rng,
            "history": [[dataclasses.asdict(e) for e in h] for h in m.history],
            "best_loss": list(m.best_loss),
            "best_epoch": list(m.best_epoch),
            "diverged_epoch": list(m.diverged_epoch),
            "learner": self.learner.state_dict(),
        }

    def _restore(self, path: Path) -> None:
        """Continue from `path`; an unreadable one is moved aside (CheckpointUnreadable)."""
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload.get("version") != CHECKPOINT_VERSION:
                raise ValueError(f"format {payload.get('version')!r}, this engine writes "
                                 f"{CHECKPOINT_VERSION}")
        except Exception as error:  # noqa: BLE001 - empty, torn, foreign: the same recovery
            unreadable(path, error)
        if payload.get("members") != [c.to_dict() for c in self.configs]:
            raise QGenError(f"checkpoint {path} belongs to a different trial config; delete "
                            "its folder or use another checkpoint directory")
        try:  # a file that loads but whose state does not fit this learner (missing keys, shapes)
            self.learner.load_state_dict(payload["learner"])
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            unreadable(path, error)
        torch.set_rng_state(payload["rng"]["cpu"])
        if "cuda" in payload["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
        self.epoch, self.seconds = payload["epoch"], payload["seconds"]
        self.members = _Members(
            history=[[EpochMetrics(**e) for e in h] for h in payload["history"]],
            best_loss=list(payload["best_loss"]), best_epoch=list(payload["best_epoch"]),
            diverged_epoch=list(payload["diverged_epoch"]))

    # -- the end

    def finish(self) -> list[TrialResult]:
        """Evaluate every member's kept model on the clean splits (NaN when it has none) and
        write its best.pt."""
        self.learner.load_kept()
        train, test = self._evaluate("train"), self._evaluate("test")
        results, m, nan = [], self.members, math.nan
        for i in range(self.k):
            (train_loss, train_acc), (test_loss, test_acc) = train[i], test[i]
            norm, sizes = nan, {}
            if m.best_epoch[i] > 0:
                model = self.learner.kept_model(i)
                norm, sizes = l2_norm(model), step_sizes(model)
                if self.folders is not None and self.world.main:
                    state = self.learner.kept_state(i)
                    atomic_save(self._weights(i, state, m.best_epoch[i],
                                              train_loss=m.best_loss[i]),
                                self.folders[i] / "best.pt")
            else:
                train_loss = train_acc = test_loss = test_acc = nan
            results.append(TrialResult(
                status="diverged" if m.diverged_epoch[i] is not None else "done",
                train_acc=train_acc, test_acc=test_acc, train_loss=train_loss,
                test_loss=test_loss, gap=test_loss - train_loss, l2_norm=norm,
                best_epoch=m.best_epoch[i], epochs_run=len(m.history[i]), seconds=self.seconds,
                device=str(self.learner.device), diverged_epoch=m.diverged_epoch[i],
                step_sizes=sizes, history=tuple(m.history[i]),
            ))
        return results
