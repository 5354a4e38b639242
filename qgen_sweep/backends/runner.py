"""The work of one trial attempt, shared by every backend: it runs the trial engine on the trial's
checkpoint directory and writes the store's rows itself.

- Before anything, a complete trial (its final row and its epoch rows read back) is skipped
  (never run twice). A finished trial whose epochs file was lost runs again: the engine continues
  from its last.pt, which holds every epoch, so it only evaluates the kept model once more; then
  the epochs file is written and the final row replaced (one file per trial: never two rows).
- Each start appends to `checkpoints/<id>/attempts.json` (attempt number, host, first epoch it
  trained), so attempts are counted across Ray retries and separate `resume` runs alike.
- Per-epoch rows are rewritten after every epoch (visible while the trial runs); the final row
  (with provenance) is written last, atomically: after it the trial is done.
- A failed attempt, a failure to write the final row included, writes one failure row
  (`failures/<id>-<attempt>.parquet`) and re-raises, so the backend can retry it; a trial is
  *failed* when it has failure rows and no final row.
- Every write first checks the launch's lease (`RunContext.lease`, `store.lease_held`): once the
  driver is gone or another launch holds the lock, the trial stops (`LeaseLost`) and writes
  nothing, so a resume started at once never shares a trial with orphaned workers.
- An input error (`UsageError`: missing data, a device or a size this machine cannot give) is the
  same on every attempt: `run_or_stop` returns it as the summary's `input_error`, and the backend
  stops the sweep instead of retrying.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable
from typing import Any

from qgen_sweep.backends import RunContext
from qgen_sweep.backends.faults import FINAL_ROW, FaultPlan
from qgen_sweep.errors import CheckpointUnreadable, LeaseLost, UsageError
from qgen_sweep.provenance import host, now
from qgen_sweep.store import (
    ResultsStore,
    config_columns,
    lease_held,
    read_attempts,
    write_attempts,
)
from qgen_sweep.trial.config import (
    EpochMetrics,
    TrialConfig,
    TrialResult,
    TrialRuntime,
)


def run_one(task: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Run (or continue) one trial to its final row; returns a small summary for progress."""
    if "bundle" in task:  # a fused bundle of several trials
        return run_bundle_one(task, ctx)
    store = ResultsStore(ctx.store_root)
    trial_id, bits = task["trial_id"], int(task["bits"])
    final = store.final_row(trial_id, bits, columns=["status"])
    if final is not None and store.has("epochs", trial_id, bits):
        return {"trial_id": trial_id, "status": final["status"], "skipped": True}
    config = TrialConfig.from_dict(task["config"])
    attempts = start_attempt(store, ctx, trial_id)
    try:
        result = _attempt(task, ctx, store, config, attempts)
    except CheckpointUnreadable:  # recorded and moved aside: one more attempt, afresh
        attempts = start_attempt(store, ctx, trial_id)
        result = _attempt(task, ctx, store, config, attempts)
    try:
        _check_fault(ctx, trial_id, FINAL_ROW)
        check_lease(store, ctx)
        store.write_epochs(trial_id, bits, [epoch_row(m) for m in result.history])
        row = final_row(task, ctx, config, result, attempts)
        store.write_trial(row)
    except Exception as error:  # the attempt trained but has no final row: say why
        _record(store, ctx, trial_id, bits, error, len(attempts))
        raise
    _log_final(ctx, row)
    return {"trial_id": trial_id, "status": result.status, "attempts": len(attempts),
            "seconds": result.seconds, "skipped": False}


def run_or_stop(task: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """`run_one`, with an input error (its failure row written) returned as the summary's
    `input_error` line rather than raised: retrying it would fail the same way."""
    try:
        return run_one(task, ctx)
    except UsageError as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        return {"trial_id": task["trial_id"], "status": "failed", "skipped": False,
                "input_error": message}


def _attempt(task: dict[str, Any], ctx: RunContext, store: ResultsStore, config: TrialConfig,
             attempts: list[dict[str, Any]]) -> TrialResult:
    """One attempt at training; a failure is recorded as this attempt's row and re-raised."""
    try:
        return _train(task, ctx, store, config, attempts)
    except Exception as error:
        _record(store, ctx, task["trial_id"], int(task["bits"]), error, len(attempts))
        raise


def check_lease(store: ResultsStore, ctx: RunContext) -> None:
    """LeaseLost when the launch that started this trial no longer holds the results directory."""
    if ctx.lease is not None and not lease_held(store.root, ctx.lease):
        raise LeaseLost(f"the launch that started this trial no longer holds {store.root}; "
                        f"the trial stops without writing")


def _record(store: ResultsStore, ctx: RunContext, trial_id: str, bits: int,
            error: BaseException, attempt: int) -> None:
    """The failure row of one attempt, unless the lease is lost (then nothing is written)."""
    if isinstance(error, LeaseLost) or (ctx.lease is not None
                                        and not lease_held(store.root, ctx.lease)):
        return
    store.record_failure("trials", trial_id, bits, error, attempt=attempt)


def _check_fault(ctx: RunContext, trial_id: str, epoch: int | str) -> None:
    faults = FaultPlan.load(ctx.fault_file)
    if faults is not None:
        faults.check(trial_id, epoch=epoch)


def run_follower(task: dict[str, Any], ctx: RunContext) -> None:
    """A data-parallel rank other than 0: trains the trial alongside rank 0 (the same checkpoint
    directory, from which every rank continues) and writes nothing; rank 0 runs `run_one`."""
    store = ResultsStore(ctx.store_root)
    if store.complete(task["trial_id"], int(task["bits"])):  # the same test as rank 0's
        return
    runtime = TrialRuntime(**ctx.runtime)
    config = TrialConfig.from_dict(task["config"])
    load_trial_fn(ctx.trial_fn)(config, runtime, store.checkpoint_dir(task["trial_id"]), None)


def _train(task: dict[str, Any], ctx: RunContext, store: ResultsStore, config: TrialConfig,
           attempts: list[dict[str, Any]]) -> TrialResult:
    trial_id = task["trial_id"]
    faults = FaultPlan.load(ctx.fault_file)
    if faults is not None:
        faults.check(trial_id, epoch=0)
    log = _EpochLog(store, ctx, trial_id, int(task["bits"]), attempts)

    def on_epoch(metrics: EpochMetrics) -> None:
        log.record(metrics)
        if faults is not None:
            faults.check(trial_id, epoch=metrics.epoch)

    runtime = TrialRuntime(**ctx.runtime)
    try:
        return load_trial_fn(ctx.trial_fn)(config, runtime, store.checkpoint_dir(trial_id),
                                           on_epoch)
    finally:
        log.close()


def load_trial_fn(path: str) -> Callable[..., TrialResult]:
    """Import "module:function" (the trial engine, or a no-op engine for benchmarks)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class _EpochLog:
    """One trial's epoch rows and attempts log, rewritten as each epoch ends (single trials and
    bundle members alike), and the opt-in loggers' per-epoch records (`launch --log`)."""

    def __init__(self, store: ResultsStore, ctx: RunContext, trial_id: str, bits: int,
                 attempts: list[dict[str, Any]]) -> None:
        self.store, self.trial_id, self.bits, self.attempts = store, trial_id, bits, attempts
        self.ctx = ctx
        loggers = ctx.loggers
        self.rows = store.epochs(trial_id, bits)
        self.tensorboard = None
        if "tensorboard" in loggers:
            from qgen_sweep.backends.tensorboard import TensorBoardLog

            self.tensorboard = TensorBoardLog(store.root, trial_id, len(attempts))

    def record(self, metrics: EpochMetrics) -> None:
        self.rows = [r for r in self.rows if r["epoch"] < metrics.epoch] + [epoch_row(metrics)]
        check_lease(self.store, self.ctx)
        self.store.write_epochs(self.trial_id, self.bits, self.rows)
        if self.tensorboard is not None:
            self.tensorboard.epoch(metrics)
        if self.attempts[-1]["first_epoch"] is None:  # where this attempt started training
            self.attempts[-1]["first_epoch"] = metrics.epoch
            write_attempts(self.store, self.trial_id, self.attempts)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _log_final(ctx: RunContext, row: dict[str, Any]) -> None:
    """The opt-in loggers' record of a finished trial (TensorBoard's HParams row)."""
    if "tensorboard" in ctx.loggers:
        from qgen_sweep.backends.tensorboard import log_final

        log_final(ctx.store_root, row)


def start_attempt(store: ResultsStore, ctx: RunContext, trial_id: str) -> list[dict[str, Any]]:
    """Record one more start of a trial in its attempts log (what `status` counts as running
    while the sweep lock is held); returns the log. Refused once the launch's lease is gone."""
    check_lease(store, ctx)
    attempts = read_attempts(store, trial_id)
    attempts.append({"attempt": len(attempts) + 1, "host": host(), "started": now().isoformat(),
                     "first_epoch": None})
    write_attempts(store, trial_id, attempts)
    return attempts


def epoch_row(m: EpochMetrics) -> dict[str, Any]:
    """An EPOCH_SCHEMA row (without trial_id / bits, which the store adds)."""
    return {"epoch": m.epoch, "train_loss": m.train_loss, "train_acc": m.train_acc,
            "test_loss": m.test_loss, "test_acc": m.test_acc, "lr": m.lr, "seconds": m.seconds,
            "step_size_min": m.step_size_min, "step_size_mean": m.step_size_mean,
            "step_size_max": m.step_size_max}


def final_row(task: dict[str, Any], ctx: RunContext, config: TrialConfig, result: TrialResult,
              attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """The TRIAL_SCHEMA row: config, final metrics, provenance."""
    return {
        **config_columns(config, task["lr_index"]), "sweep": ctx.sweep, "status": result.status,
        "train_acc": result.train_acc, "test_acc": result.test_acc,
        "train_loss": result.train_loss, "test_loss": result.test_loss, "gap": result.gap,
        "l2_norm": result.l2_norm, "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run, "diverged_epoch": result.diverged_epoch,
        "seconds": result.seconds, "step_size_layers": list(result.step_sizes),
        "step_sizes": list(result.step_sizes.values()), "engine": "single", "bundle_id": None,
        "attempts": len(attempts), "host": host(), "device": result.device,
        "git_rev": ctx.provenance.get("git_rev"), "versions_json": ctx.provenance.get("versions"),
        "started_at": dt.datetime.fromisoformat(attempts[0]["started"]), "finished_at": now(),
    }


# ---- fused bundles: several trials trained as one network, one row each -------------------------


def run_bundle_one(task: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Train the unfinished members of a bundle task together; one final row per member."""
    from qgen_sweep.trial.bundle import trained_bundle_id

    store = ResultsStore(ctx.store_root)
    todo = [m for m in task["bundle"] if not store.complete(m["trial_id"], int(m["bits"]))]
    if not todo:
        return {"trial_id": task["trial_id"], "status": "done", "skipped": True,
                "members": len(task["bundle"])}
    configs = [TrialConfig.from_dict(m["config"]) for m in todo]
    attempts = {m["trial_id"]: start_attempt(store, ctx, m["trial_id"]) for m in todo}
    try:
        results = _bundle_attempt(ctx, store, todo, configs, attempts)
    except CheckpointUnreadable:  # recorded and moved aside: one more attempt, afresh
        attempts = {m["trial_id"]: start_attempt(store, ctx, m["trial_id"]) for m in todo}
        results = _bundle_attempt(ctx, store, todo, configs, attempts)
    statuses = []
    for m, config, result in zip(todo, configs, results, strict=True):
        trial_id, bits = m["trial_id"], int(m["bits"])
        try:
            _check_fault(ctx, trial_id, FINAL_ROW)
            check_lease(store, ctx)
            store.write_epochs(trial_id, bits, [epoch_row(e) for e in result.history])
            row = final_row(m, ctx, config, result, attempts[trial_id])
            row["engine"] = "fused"
            row["bundle_id"] = trained_bundle_id(store.root / "checkpoints", config)
            store.write_trial(row)
        except Exception as error:  # this member trained but has no final row: say why
            _record(store, ctx, trial_id, bits, error, len(attempts[trial_id]))
            raise
        _log_final(ctx, row)
        statuses.append(result.status)
    return {"trial_id": task["trial_id"], "status": "done", "skipped": False,
            "members": len(task["bundle"]), "statuses": statuses}


def _bundle_attempt(ctx: RunContext, store: ResultsStore, todo: list[dict[str, Any]],
                    configs: list[TrialConfig],
                    attempts: dict[str, list[dict[str, Any]]]) -> list[TrialResult]:
    """One attempt at a bundle; a failure is a row for every member, then re-raised."""
    from qgen_sweep.trial.bundle import run_bundle

    bits = {m["trial_id"]: int(m["bits"]) for m in todo}
    logs = {tid: _EpochLog(store, ctx, tid, bits[tid], attempts[tid]) for tid in bits}
    faults = FaultPlan.load(ctx.fault_file)  # a fault in any member fails the bundle's attempt

    def on_epoch(by_id: dict[str, EpochMetrics]) -> None:
        for trial_id, metrics in by_id.items():
            logs[trial_id].record(metrics)
        for trial_id, metrics in by_id.items():  # after every member's rows are written
            if faults is not None:
                faults.check(trial_id, epoch=metrics.epoch)

    runtime = TrialRuntime(**ctx.runtime)
    try:
        if faults is not None:
            for m in todo:
                faults.check(m["trial_id"], epoch=0)
        return run_bundle(configs, runtime, store.root / "checkpoints", on_epoch)
    except Exception as error:
        for m in todo:
            _record(store, ctx, m["trial_id"], bits[m["trial_id"]], error,
                    len(attempts[m["trial_id"]]))
        raise
    finally:
        for log in logs.values():
            log.close()
