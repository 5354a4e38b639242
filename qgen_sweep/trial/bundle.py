"""Train a bundle of trials together as one fused network (HFTA-style, trial/fused.py).

`run_bundle(configs, ...)` trains K NiN trial configs that differ only in per-member fields
(config.PER_MEMBER_FIELDS: bits, optimizer, lr, weight decay, momentum, first/last policy,
step-size lr scale, schedule factor gamma) as one `FusedNiN` and returns one TrialResult per
member: the results K `run_trial` calls give (to float tolerance; exact to ~1e-10 in float64,
tests/test_trial_bundle.py), because both follow the one protocol of protocol.py and differ only
in the learner it drives. Which trials form a bundle is planned torch-free in qgen_sweep.plan.

A member whose loss turns non-finite is frozen from that step on (its parameters and optimizer
state stop changing) and ends `diverged` at that epoch; the others go on untouched.

Checkpoint layout under `checkpoint_dir` (the folder holding per-trial folders, i.e. the store's
`checkpoints/`): `bundle-<bundle_id>/last.pt` (the bundle's training state) and
`bundle-<bundle_id>/members.json`, and per member `<trial_id>/init.pt`, `<trial_id>/best.pt`
(unfused format, so `train.load_model` and the measures read them) and `<trial_id>/result.json`
(written when the bundle ends; a member with a result.json is returned as is and never trained
again; one that does not read back, e.g. torn by a kill, is moved aside with CheckpointUnreadable
like an unreadable last.pt, and the member trains again).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from qgen_sweep.atomic import write_text_atomic
from qgen_sweep.errors import UsageError
from qgen_sweep.trial.config import (
    MEMBERS_FILE,
    PER_MEMBER_FIELDS,
    EpochMetrics,
    TrialConfig,
    TrialResult,
    TrialRuntime,
    bundle_id,
    bundle_key,
    unfusable_reasons,
)
from qgen_sweep.trial.data import Dataset, load_dataset, resolve_device
from qgen_sweep.trial.fused import (
    CONV_IMPLS,
    FusedNiN,
    FusedOptimizer,
    member_correct,
    member_losses,
    member_order,
)
from qgen_sweep.trial.memory import check_fits
from qgen_sweep.trial.models import build_model
from qgen_sweep.trial.protocol import EpochCallback, Training, at_least_fp32, unreadable
from qgen_sweep.trial.train import runtime_dtype, with_dtype


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
    if configs[0].arch != "nin":
        raise UsageError(f"the fused engine trains NiN bundles; arch {configs[0].arch} trains "
                         "one trial at a time (run_trial)")
    reasons = unfusable_reasons(configs[0])
    if reasons:
        raise UsageError(f"the fused engine does not implement {', '.join(reasons)}; such "
                         "trials train one at a time (run_trial)")


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
        results.update(_train(todo, runtime, root, on_epoch, conv_impl))
    return [results[c.trial_id] for c in configs]


def _train(configs: list[TrialConfig], runtime: TrialRuntime, root: Path | None,
           on_epoch: EpochCallback | None, conv_impl: str) -> dict[str, TrialResult]:
    device = resolve_device(runtime.device)
    check_fits(configs, device, runtime)  # before anything is allocated
    ordered = [configs[i] for i in member_order(configs)]
    data = with_dtype(load_dataset(ordered[0].dataset, runtime), runtime_dtype(runtime))
    learner = FusedLearner(ordered, runtime, data, device, conv_impl)
    last = folders = None
    if root is not None:
        folder = root / f"bundle-{learner.id}"
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / MEMBERS_FILE, json.dumps([c.trial_id for c in ordered]))
        last, folders = folder / "last.pt", [root / c.trial_id for c in ordered]
    results = Training(learner, data, runtime, last, folders).run(on_epoch)
    out = {c.trial_id: r for c, r in zip(ordered, results, strict=True)}
    if root is not None:
        for config in ordered:
            _write_result(root, config, out[config.trial_id], learner.id)
    return out


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
    except (ValueError, KeyError, TypeError) as error:  # torn by a kill, or foreign
        unreadable(path, error)  # moved aside: the member trains again


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
    write_text_atomic(path, json.dumps(payload, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


# ----------------------------------------------------------------------------- the learner


class FusedLearner:
    """K NiN members as one FusedNiN with per-member optimizers, for the protocol.

    Members are held in optimizer order (FusedOptimizer needs contiguous row ranges); all
    per-member lists follow that order.
    """

    def __init__(self, configs: list[TrialConfig], runtime: TrialRuntime, data: Dataset,
                 device: torch.device, conv_impl: str) -> None:
        dtype = runtime_dtype(runtime)
        members = []
        for config in configs:
            torch.manual_seed(config.seed)  # the same initialisation run_trial uses
            members.append(build_model(config, data.in_channels, data.num_classes,
                                       data.image_size).to(dtype))
        self.initial = [m.state_dict() for m in members]
        model = FusedNiN(members, "grouped" if conv_impl == "auto" else conv_impl).to(device)
        model.channels_last = runtime.channels_last
        self.configs, self.device, self.data, self.model = configs, device, data, model
        self.k, self.id = len(configs), bundle_id(configs)
        self.conv_choices: list[dict] = []
        if conv_impl == "auto":
            batch = min(configs[0].batch_size, len(data.train_x))
            self.conv_choices = model.choose_conv_impls(batch, data.image_size)
        self.optimizer = FusedOptimizer(model, configs)
        self.forward = torch.compile(model, mode=runtime.compile) if runtime.compile else model
        self.host_lrs = [c.lr for c in configs]  # host copy of the scheduled lr (no device reads)
        self.alive = torch.ones(self.k, dtype=torch.bool, device=device)
        self.kept: dict[str, Tensor] = model.snapshot()
        # Eval activations grow with K: keep the eval batch's memory near a single trial's.
        self.eval_batch = max(configs[0].batch_size, runtime.eval_batch_size // self.k)

    def _autocast(self) -> Any:
        if self.configs[0].amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def lrs(self) -> list[float]:
        return list(self.host_lrs)

    def train_step(self, x: Tensor, y: Tensor, loss_sum: Tensor, correct: Tensor) -> None:
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

    def end_epoch(self, epoch: int) -> None:
        if epoch in self.configs[0].milestones:
            self.optimizer.scale_lr()  # every member by its own gamma
            self.host_lrs = [lr * c.gamma for lr, c in zip(self.host_lrs, self.configs,
                                                           strict=True)]

    def freeze(self, member: int) -> None:
        self.alive[member] = False

    def keep(self, improved: list[bool]) -> None:
        self.model.update_snapshot(self.kept, torch.tensor(improved, device=self.device))

    def load_kept(self) -> None:
        self.model.load_snapshot(self.kept)

    def evaluate(self, x: Tensor, y: Tensor) -> list[tuple[float, float]]:
        return evaluate_members(self.model, x, y, self.eval_batch)

    def step_size_summaries(self) -> list[tuple[float, float, float]]:
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

    def initial_state(self, member: int) -> dict[str, Tensor]:
        return self.initial[member]

    def kept_state(self, member: int) -> dict[str, Tensor]:
        return self.model.member_state_dict(member, self.kept["flat"], self.kept)

    def kept_model(self, member: int) -> nn.Module:
        config, data = self.configs[member], self.data
        model = build_model(config, data.in_channels, data.num_classes, data.image_size)
        model = model.to(self.model.flat.dtype)
        model.load_state_dict(self.kept_state(member))
        return model

    def state_dict(self) -> dict[str, Any]:
        cpu = lambda d: {k: v.detach().cpu().clone() for k, v in d.items()}  # noqa: E731
        return {"model": cpu(self.model.state_dict()),
                "optimizer": cpu(self.optimizer.state_dict()),
                "alive": self.alive.cpu().clone(), "lrs": list(self.host_lrs),
                "kept": cpu(self.kept)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.alive.copy_(state["alive"])
        self.host_lrs = list(state["lrs"])
        for name, value in state["kept"].items():
            self.kept[name].copy_(value)


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
