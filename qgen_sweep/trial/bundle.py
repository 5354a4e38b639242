"""Train a bundle of trials together as one fused network (HFTA-style).

`run_bundle(configs, ...)` trains K trial configs that differ only in per-member fields (bits,
optimizer, lr, weight decay, momentum, first/last policy, step-size lr scale, lr-schedule factor
gamma) as one `FusedNiN`
and returns one TrialResult per member, the same result K `run_trial` calls would give (to float
tolerance; exact to ~1e-10 in float64, tests/test_trial_bundle.py). `plan_bundles` groups
trial configs into such bundles; `trial_row_fields` / `epoch_row_fields` turn a member's result
into the store's columns, like a single trial's except `engine` and `bundle_id`.

Protocol per member, as in train.py: every member sees the same batches (a pure function of
(seed, epoch)), the epoch loss is the mean of the batch losses, the kept model is the epoch with
the lowest training loss, the end is an eval-mode pass over the clean splits. A member whose loss
turns non-finite is frozen from that step on (its parameters and optimizer state stop changing)
and ends `diverged` at that epoch, like run_trial; the others go on untouched.

Checkpoint layout under `checkpoint_dir` (the folder holding per-trial folders, i.e. the store's
`checkpoints/`): `bundle-<bundle_id>/last.pt` (the whole bundle's training state, atomically after
every epoch), and per member `<trial_id>/init.pt`, `<trial_id>/best.pt` (unfused format, so
`train.load_model` and the measures read them) and `<trial_id>/result.json` (written when the
bundle ends; a member with a result.json is returned as is and never trained again).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qgen_sweep.atomic import write_text_atomic
from qgen_sweep.errors import QGenError, UsageError
from qgen_sweep.trial.config import EpochMetrics, TrialConfig, TrialResult, TrialRuntime
from qgen_sweep.trial.data import (
    Dataset,
    batch_indices,
    crop_flip,
    epoch_generator,
    load_dataset,
    resolve_device,
)
from qgen_sweep.trial.fused import (
    CONV_IMPLS,
    PER_MEMBER_FIELDS,
    FusedNiN,
    FusedOptimizer,
    member_correct,
    member_losses,
    member_order,
)
from qgen_sweep.trial.lsq import step_sizes
from qgen_sweep.trial.models import build_model
from qgen_sweep.trial.train import (
    CHECKPOINT_VERSION,
    _atomic_save,
    accumulator_dtype,
    at_least_fp32,
    l2_norm,
    load_checkpoint,
    runtime_dtype,
    with_dtype,
)

EpochCallback = Callable[[dict[str, EpochMetrics]], None]
MEMBERS_FILE = "members.json"  # in bundle-<id>/: member trial ids in training order


# ----------------------------------------------------------------------------- planning


def bundle_key(config: TrialConfig) -> tuple:
    """What members of one bundle must share: every config field except PER_MEMBER_FIELDS."""
    data = config.to_dict()
    return tuple((k, json.dumps(data[k])) for k in sorted(data) if k not in PER_MEMBER_FIELDS)


def bundle_id(configs: Sequence[TrialConfig]) -> str:
    """Content address of a bundle: sha256 of its sorted member trial ids, 16 hex digits."""
    ids = ",".join(sorted(c.trial_id for c in configs))
    return hashlib.sha256(ids.encode()).hexdigest()[:16]


def plan_bundles(
    configs: Sequence[TrialConfig], bundle_size: int, keep: Sequence[Sequence[str]] = ()
) -> list[tuple[TrialConfig, ...]]:
    """Group `configs` into bundles of at most `bundle_size` members that can train together.

    `keep`: member trial ids of interrupted bundles (`interrupted_bundles`). Each one whose
    members are all in `configs` stays one bundle, whatever `bundle_size` is now, so it continues
    from its checkpoint instead of starting again; these come first. The other configs are grouped
    by `bundle_key` (first appearance order), each group is cut into ceil(n / bundle_size) chunks
    of near-equal size (larger first), in input order. Pass only unfinished trials: the same
    unfinished set always gives the same bundles (and bundle ids).
    """
    if not isinstance(bundle_size, int) or isinstance(bundle_size, bool) or bundle_size < 1:
        raise UsageError(f"bundle size must be an integer >= 1, but got {bundle_size!r}")
    by_id = {c.trial_id: c for c in configs}
    bundles: list[tuple[TrialConfig, ...]] = []
    for ids in keep:
        members = tuple(by_id[i] for i in ids if i in by_id)
        if members and len(members) == len(ids) and len({bundle_key(c) for c in members}) == 1:
            bundles.append(members)
            for i in ids:
                del by_id[i]
    groups: dict[tuple, list[TrialConfig]] = {}
    for config in by_id.values():
        groups.setdefault(bundle_key(config), []).append(config)
    for members in groups.values():
        count = math.ceil(len(members) / bundle_size)
        base, extra = divmod(len(members), count)
        start = 0
        for i in range(count):
            size = base + (1 if i < extra else 0)
            bundles.append(tuple(members[start : start + size]))
            start += size
    return bundles


def interrupted_bundles(checkpoint_dir: Path) -> list[tuple[str, ...]]:
    """Member trial ids (training order) of each bundle under `checkpoint_dir` that has a
    last.pt and has not ended (no member has a result.json), sorted by bundle folder."""
    found = []
    for folder in sorted(Path(checkpoint_dir).glob("bundle-*")):
        try:
            ids = tuple(json.loads((folder / MEMBERS_FILE).read_text()))
        except (OSError, ValueError):
            continue
        if (folder / "last.pt").is_file() and ids and not any(
                (Path(checkpoint_dir) / i / "result.json").is_file() for i in ids):
            found.append(ids)
    return found


def check_bundle(configs: Sequence[TrialConfig]) -> None:
    """Raise UsageError unless `configs` can train as one bundle."""
    if not configs:
        raise UsageError("a bundle needs at least one trial config, but got none")
    ids = [c.trial_id for c in configs]
    if len(set(ids)) != len(ids):
        raise UsageError(f"a bundle's trials must be distinct, but got duplicate ids in {ids}")
    key = bundle_key(configs[0])
    for config in configs[1:]:
        if bundle_key(config) != key:
            diff = sorted(k for (k, v), (_, w) in zip(bundle_key(config), key, strict=True)
                          if v != w)
            raise UsageError(
                f"bundle members must agree on everything but {', '.join(PER_MEMBER_FIELDS)}; "
                f"trial {config.trial_id} differs in {', '.join(diff)} (use plan_bundles)"
            )


# ----------------------------------------------------------------------------- store rows


def trial_row_fields(
    config: TrialConfig, result: TrialResult, bundle: str | None = None
) -> dict[str, Any]:
    """The TRIAL_SCHEMA columns that come from a config and its result (a single trial's row
    when `bundle` is None, else engine "fused" and bundle_id). The caller adds sweep, lr_index,
    attempts, host, git_rev, versions_json, started_at, finished_at."""
    layers = list(result.step_sizes)
    return {
        "trial_id": config.trial_id,
        **{k: getattr(config, k) for k in ("dataset", "bits", "optimizer", "lr", "weight_decay",
                                             "depth", "width", "base_width", "epochs",
                                             "batch_size", "seed")},
        **{k: getattr(result, k) for k in ("status", "train_acc", "test_acc", "train_loss",
                                             "test_loss", "gap", "l2_norm", "best_epoch",
                                             "epochs_run", "diverged_epoch", "seconds",
                                             "device")},
        "step_size_layers": layers,
        "step_sizes": [result.step_sizes[name] for name in layers],
        "config_json": config.canonical_json(),
        "engine": "single" if bundle is None else "fused",
        "bundle_id": bundle,
    }


def epoch_row_fields(metrics: EpochMetrics) -> dict[str, Any]:
    """EPOCH_SCHEMA columns of one epoch (without trial_id and bits)."""
    return dataclasses.asdict(metrics)


# ----------------------------------------------------------------------------- training


def run_bundle(
    configs: Sequence[TrialConfig],
    runtime: TrialRuntime = TrialRuntime(),
    checkpoint_dir: Path | None = None,
    on_epoch: EpochCallback | None = None,
    conv_impl: str = "auto",
) -> list[TrialResult]:
    """Train `configs` as one fused bundle; one TrialResult per config, in the given order.

    `checkpoint_dir` holds per-trial folders (see the module docstring); with it the bundle
    continues from its last.pt and members with a result.json are not trained again.
    `on_epoch({trial_id: EpochMetrics})` is called after each epoch's checkpoint is on disk, for
    the members that trained in that epoch; an exception it raises propagates.
    `conv_impl`: "grouped", "split" (K separate convs) or "auto" (measure per conv shape).
    """
    check_bundle(configs)
    if conv_impl not in CONV_IMPLS:
        raise UsageError(f"conv_impl must be one of {', '.join(CONV_IMPLS)}, but got {conv_impl!r}")
    root = Path(checkpoint_dir) if checkpoint_dir is not None else None
    results: dict[str, TrialResult] = {}
    if root is not None:
        results = {c.trial_id: r for c in configs if (r := _read_result(root, c)) is not None}
    todo = [c for c in configs if c.trial_id not in results]
    if todo:
        if runtime.threads:
            torch.set_num_threads(runtime.threads)
        state = _BundleState.create(todo, runtime, conv_impl)
        results.update(state.run(root, on_epoch))
    return [results[c.trial_id] for c in configs]


def _result_path(root: Path, config: TrialConfig) -> Path:
    return root / config.trial_id / "result.json"


def _read_result(root: Path, config: TrialConfig) -> TrialResult | None:
    path = _result_path(root, config)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data["config"] != config.to_dict():
            raise ValueError("config differs")
        result = dict(data["result"])
        result["history"] = tuple(EpochMetrics(**m) for m in result["history"])
        return TrialResult(**result)
    except (ValueError, KeyError, TypeError) as error:
        raise QGenError(
            f"{path} is not a result of trial {config.trial_id} ({error}); delete it to retrain"
        ) from error


def trained_bundle_id(checkpoint_dir: Path, config: TrialConfig) -> str | None:
    """Id of the bundle that trained `config` to its end (from its result.json), else None."""
    path = _result_path(Path(checkpoint_dir), config)
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("bundle_id")


def _write_result(root: Path, config: TrialConfig, result: TrialResult, bundle: str) -> None:
    payload = {"config": config.to_dict(), "bundle_id": bundle,
               "result": dataclasses.asdict(result)}
    path = _result_path(root, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, default=_json_default))
    tmp.replace(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


class _BundleState:
    """Everything that evolves while a bundle trains; saved to / restored from last.pt.

    Members are held in optimizer order (FusedOptimizer needs contiguous row ranges); all
    per-member lists below follow that order.
    """

    def __init__(self, configs: list[TrialConfig], runtime: TrialRuntime, data: Dataset,
                 device: torch.device, model: FusedNiN) -> None:
        self.configs, self.runtime, self.data, self.device = configs, runtime, data, device
        self.model = model
        self.k = len(configs)
        self.optimizer = FusedOptimizer(model, configs)
        self.forward = torch.compile(model, mode=runtime.compile) if runtime.compile else model
        self.lrs = [c.lr for c in configs]  # host copy of the scheduled lr (no device reads)
        self.alive = torch.ones(self.k, dtype=torch.bool, device=device)
        self.epoch = 0
        self.history: list[list[EpochMetrics]] = [[] for _ in configs]
        self.best: dict[str, Tensor] = model.snapshot()
        self.best_loss = [math.inf] * self.k
        self.best_epoch = [0] * self.k
        self.diverged_epoch: list[int | None] = [None] * self.k
        self.seconds = 0.0
        self.conv_choices: list[dict] = []
        self.initial: list[dict[str, Tensor]] = []  # members' init state_dicts (for init.pt)
        self.id = bundle_id(configs)

    @classmethod
    def create(cls, configs: Sequence[TrialConfig], runtime: TrialRuntime,
               conv_impl: str) -> _BundleState:
        dtype = runtime_dtype(runtime)
        device = resolve_device(runtime.device)
        ordered = [configs[i] for i in member_order(configs)]
        data = with_dtype(load_dataset(ordered[0].dataset, runtime), dtype)
        members = []
        for config in ordered:
            torch.manual_seed(config.seed)  # the same initialisation run_trial uses
            members.append(build_model(config, data.in_channels, data.num_classes).to(dtype))
        model = FusedNiN(members, "grouped" if conv_impl == "auto" else conv_impl).to(device)
        model.channels_last = runtime.channels_last
        state = cls(ordered, runtime, data, device, model)
        if conv_impl == "auto":
            batch = min(ordered[0].batch_size, len(data.train_x))
            state.conv_choices = model.choose_conv_impls(batch, data.image_size)
        state.initial = [m.state_dict() for m in members]
        return state

    # -- the loop

    def run(self, root: Path | None, on_epoch: EpochCallback | None) -> dict[str, TrialResult]:
        folder = root / f"bundle-{self.id}" if root is not None else None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(folder / MEMBERS_FILE,
                              json.dumps([c.trial_id for c in self.configs]))
            if (folder / "last.pt").is_file():
                self.restore(folder / "last.pt")
            else:
                self._save_initial(root)
        while self.epoch < self.configs[0].epochs and any(d is None for d in self.diverged_epoch):
            metrics = self.train_epoch()
            if folder is not None:
                _atomic_save(self._payload(), folder / "last.pt")
            if on_epoch is not None:
                on_epoch(metrics)
        results = self.finish(root)
        if root is not None:
            for config in self.configs:
                _write_result(root, config, results[config.trial_id], self.id)
        return results

    def _autocast(self) -> Any:
        if self.configs[0].amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def train_epoch(self) -> dict[str, EpochMetrics]:
        """One pass over the training split; per-member sums are read from the device once."""
        started = time.perf_counter()
        self.epoch += 1
        self.model.train()
        config = self.configs[0]
        generator = epoch_generator(config.seed, self.epoch, self.device)
        batches = batch_indices(len(self.data.train_x), config.batch_size, generator)
        # Summed on the device as in train.py (same dtype, same rounding), read once per epoch.
        loss_sum = torch.zeros(self.k, dtype=accumulator_dtype(self.data), device=self.device)
        correct = torch.zeros(self.k, dtype=torch.int64, device=self.device)
        training = [d is None for d in self.diverged_epoch]
        for idx in batches:
            self._step(idx, generator, loss_sum, correct)
        if self.epoch in config.milestones:
            self.optimizer.scale_lr()  # every member by its own gamma
        seconds = time.perf_counter() - started
        losses = [total / len(batches) for total in loss_sum.tolist()]  # as train.py divides
        accs = [c / (len(batches) * batches.shape[1]) for c in correct.tolist()]
        improved = self._record_epoch(losses, training)
        self.model.update_snapshot(self.best, torch.tensor(improved, device=self.device))
        metrics = self._epoch_metrics(losses, accs, training, seconds)
        if self.epoch in config.milestones:
            self.lrs = [lr * c.gamma for lr, c in zip(self.lrs, self.configs, strict=True)]
        self.seconds += seconds
        return metrics

    def _step(self, idx: Tensor, generator: torch.Generator, loss_sum: Tensor,
              correct: Tensor) -> None:
        x, y = self.data.train_x[idx], self.data.train_y[idx]
        if self.configs[0].augment == "crop-flip":
            x = crop_flip(x, generator)
        if self.runtime.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            logits = self.forward(x)  # (B, K, classes)
        logits = at_least_fp32(logits)
        losses = member_losses(logits, y)  # (K,)
        ok = self.alive & torch.isfinite(losses)
        self.model.flat.grad = None
        torch.where(ok, losses, torch.zeros_like(losses)).sum().backward()
        self.optimizer.step(ok)
        # The non-finite loss of the step a member diverges in is kept (epoch loss NaN, as
        # run_trial reports it); after that the member adds nothing.
        loss_sum += torch.where(self.alive, losses.detach(), torch.zeros_like(losses))
        hits = member_correct(logits.detach(), y)
        correct += torch.where(self.alive, hits, torch.zeros_like(hits))
        self.alive.copy_(ok)

    def _record_epoch(self, losses: list[float], training: list[bool]) -> list[bool]:
        """Divergence and kept-model bookkeeping; returns which members improved."""
        improved = [False] * self.k
        for i, loss in enumerate(losses):
            if not training[i]:
                continue
            if not math.isfinite(loss):
                self.diverged_epoch[i] = self.epoch
                self.alive[i] = False
            elif loss < self.best_loss[i]:
                self.best_loss[i], self.best_epoch[i] = loss, self.epoch
                improved[i] = True
        return improved

    def _epoch_metrics(self, losses: list[float], accs: list[float], training: list[bool],
                       seconds: float) -> dict[str, EpochMetrics]:
        every = self.runtime.eval_test_every
        test = [(math.nan, math.nan)] * self.k
        if every > 0 and self.epoch % every == 0:
            test = evaluate_members(self.model, self.data.test_x, self.data.test_y,
                                    self._eval_batch())
        sizes = self._step_size_summaries()
        out: dict[str, EpochMetrics] = {}
        for i, config in enumerate(self.configs):
            if not training[i]:
                continue
            diverged = self.diverged_epoch[i] is not None
            test_loss, test_acc = (math.nan, math.nan) if diverged else test[i]
            metrics = EpochMetrics(
                epoch=self.epoch, train_loss=losses[i], train_acc=accs[i], lr=self.lrs[i],
                seconds=seconds, test_loss=test_loss, test_acc=test_acc,
                step_size_min=sizes[i][0], step_size_mean=sizes[i][1], step_size_max=sizes[i][2],
            )
            self.history[i].append(metrics)
            out[config.trial_id] = metrics
        return out

    def _step_size_summaries(self) -> list[tuple[float, float, float]]:
        steps = self.model.flat.detach()[:, self.model.num_main :].float().cpu()  # (K, convs)
        out = []
        for i in range(self.k):
            quantized = [j for j, bits in enumerate(self.model.member_bits[i]) if bits != 32]
            if not quantized:
                out.append((math.nan, math.nan, math.nan))
                continue
            row = steps[i, quantized]
            out.append((float(row.min()), float(row.mean()), float(row.max())))
        return out

    def _eval_batch(self) -> int:
        # Eval activations grow with K: keep the eval batch's memory near a single trial's.
        return max(self.configs[0].batch_size, self.runtime.eval_batch_size // self.k)

    # -- checkpoints

    def _save_initial(self, root: Path) -> None:
        for config, state in zip(self.configs, self.initial, strict=True):
            folder = root / config.trial_id
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "init.pt").is_file():
                _atomic_save(self._weights_payload(config, state, 0), folder / "init.pt")

    def _weights_payload(self, config: TrialConfig, state: dict[str, Tensor],
                         epoch: int, **extra: Any) -> dict[str, Any]:
        """The unfused init.pt / best.pt format of train.py (train.load_model reads it)."""
        return {"version": CHECKPOINT_VERSION,
                "model": {k: v.detach().to("cpu", copy=True) for k, v in state.items()},
                "epoch": epoch, **extra, "config": config.to_dict(),
                "dataset": dataclasses.asdict(self.data.info)}

    def _payload(self) -> dict[str, Any]:
        cpu = lambda d: {k: v.detach().cpu().clone() for k, v in d.items()}  # noqa: E731
        return {
            "version": CHECKPOINT_VERSION,
            "bundle_id": self.id,
            "members": [c.to_dict() for c in self.configs],
            "epoch": self.epoch,
            "model": cpu(self.model.state_dict()),
            "optimizer": cpu(self.optimizer.state_dict()),
            "alive": self.alive.cpu().clone(),
            "lrs": list(self.lrs),
            "best": {"model": cpu(self.best), "loss": list(self.best_loss),
                     "epoch": list(self.best_epoch)},
            "diverged_epoch": list(self.diverged_epoch),
            "history": [[dataclasses.asdict(m) for m in h] for h in self.history],
            "seconds": self.seconds,
        }

    def restore(self, path: Path) -> None:
        """Continue from last.pt."""
        payload = load_checkpoint(path, "bundle checkpoint", "delete it to restart")
        if payload.get("members") != [c.to_dict() for c in self.configs]:
            raise QGenError(f"bundle checkpoint {path} holds other members; delete it to restart")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.alive.copy_(payload["alive"])
        self.lrs = payload["lrs"]
        for name, value in payload["best"]["model"].items():
            self.best[name].copy_(value)
        self.best_loss, self.best_epoch = payload["best"]["loss"], payload["best"]["epoch"]
        self.diverged_epoch = payload["diverged_epoch"]
        self.history = [[EpochMetrics(**m) for m in h] for h in payload["history"]]
        self.epoch, self.seconds = payload["epoch"], payload["seconds"]

    # -- the end

    def finish(self, root: Path | None) -> dict[str, TrialResult]:
        """Evaluate every member's kept model on the clean splits (NaN when it has none)."""
        self.model.load_snapshot(self.best)
        data, batch = self.data, self._eval_batch()
        train = evaluate_members(self.model, data.train_x, data.train_y, batch)
        test = evaluate_members(self.model, data.test_x, data.test_y, batch)
        results = {}
        for i, config in enumerate(self.configs):
            results[config.trial_id] = self._member_result(i, train[i], test[i], root)
        return results

    def _member_result(self, i: int, train: tuple[float, float], test: tuple[float, float],
                       root: Path | None) -> TrialResult:
        config, nan = self.configs[i], math.nan
        train_loss = train_acc = test_loss = test_acc = norm = nan
        sizes: dict[str, float] = {}
        if self.best_epoch[i] > 0:
            (train_loss, train_acc), (test_loss, test_acc) = train, test
            state = self.model.member_state_dict(i, self.best["flat"], self.best)
            model = build_model(config, self.data.in_channels, self.data.num_classes)
            model = model.to(self.model.flat.dtype)
            model.load_state_dict(state)
            norm, sizes = l2_norm(model), step_sizes(model)
            if root is not None:
                payload = self._weights_payload(config, state, self.best_epoch[i],
                                                train_loss=self.best_loss[i])
                _atomic_save(payload, root / config.trial_id / "best.pt")
        status = "diverged" if self.diverged_epoch[i] is not None else "done"
        return TrialResult(
            status=status, train_acc=train_acc, test_acc=test_acc, train_loss=train_loss,
            test_loss=test_loss, gap=test_loss - train_loss, l2_norm=norm,
            best_epoch=self.best_epoch[i], epochs_run=len(self.history[i]),
            seconds=self.seconds, device=str(self.device),
            diverged_epoch=self.diverged_epoch[i], step_sizes=sizes,
            history=tuple(self.history[i]),
        )


def evaluate_members(model: FusedNiN, x: Tensor, y: Tensor,
                     batch_size: int) -> list[tuple[float, float]]:
    """Per member (mean cross-entropy, accuracy) on (x, y) in eval mode; one host sync."""
    was_training = model.training
    model.eval()
    k = model.k
    loss_sum = torch.zeros(k, dtype=torch.float64, device=x.device)
    correct = torch.zeros(k, dtype=torch.int64, device=x.device)
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = at_least_fp32(model(x[start : start + batch_size]))
            target = y[start : start + batch_size]
            b = len(target)
            per = torch.nn.functional.cross_entropy(
                logits.permute(0, 2, 1), target[:, None].expand(b, k), reduction="none"
            )
            loss_sum += per.sum(dim=0).double()
            correct += member_correct(logits, target)
    model.train(was_training)
    n = max(len(x), 1)
    return [(loss / n, hits / n) for loss, hits in
            zip(loss_sum.tolist(), correct.tolist(), strict=True)]
