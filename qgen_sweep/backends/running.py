"""What the running trials are doing now: their configuration and latest epoch row.

The progress display (and `status --watch`) shows one line per running trial: precision,
optimizer, learning rate, epoch k of N, train loss, test accuracy. The configuration comes from
the launch's task list (which also says which trials a fused bundle holds), else from
plan.parquet; the epoch comes from the trial's per-epoch rows, which the runner rewrites
atomically after every epoch. Files are read again only when they changed (mtime and size), and
at most every `poll` seconds, so a display redrawn 4 times a second costs a few stat calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgen_sweep.store import ResultsStore

_EPOCH_COLUMNS = ["epoch", "train_loss", "test_loss", "test_acc"]


@dataclass(frozen=True)
class TrialInfo:
    """The part of a trial's configuration a progress line shows."""

    trial_id: str
    bits: int
    optimizer: str
    lr: float
    epochs: int

    @property
    def precision(self) -> str:
        return "FP32" if self.bits == 32 else f"Int{self.bits}"


def _info(task: dict[str, Any]) -> TrialInfo:
    config = task["config"]
    return TrialInfo(task["trial_id"], int(task["bits"]), str(config["optimizer"]),
                     float(config["lr"]), int(config["epochs"]))


class RunningTrials:
    """Latest epoch rows of the trials a backend reports as running."""

    def __init__(self, store_root: Path | str, tasks: Iterable[dict[str, Any]] = (),
                 poll: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = ResultsStore(store_root)
        self.poll, self._now = poll, clock
        self.members: dict[str, list[str]] = {}  # task id -> trial ids (a bundle holds several)
        self.info: dict[str, TrialInfo] = {}
        self.add_tasks(tasks)
        self._epochs: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}
        self._plan_key: tuple[int, int] | None = None
        self._rows: list[dict[str, Any]] = []
        self._read_at: float | None = None
        self._read_for: frozenset[str] = frozenset()

    def add_tasks(self, tasks: Iterable[dict[str, Any]]) -> None:
        """Learn tasks (single trials, or fused bundles with a "bundle" member list)."""
        for task in tasks:
            members = task.get("bundle", [task])
            self.members[task["trial_id"]] = [m["trial_id"] for m in members]
            self.info.update({m["trial_id"]: _info(m) for m in members})

    def rows(self, running: Iterable[str]) -> list[dict[str, Any]]:
        """One dict per running trial (bundle members each): info fields, epoch (0 before the
        first epoch ends), train_loss, test_loss, test_acc (None until known)."""
        ids = frozenset(running)
        now = self._now()
        fresh = self._read_at is not None and now - self._read_at < self.poll
        if fresh and ids == self._read_for:
            return self._rows
        self._read_at, self._read_for = now, ids
        self._rows = [self._row(tid) for task in sorted(ids)
                      for tid in self.members.get(task, [task])]
        return self._rows

    def _row(self, trial_id: str) -> dict[str, Any]:
        info = self.info.get(trial_id) or self._from_plan(trial_id)
        row: dict[str, Any] = {"trial_id": trial_id, "precision": None, "optimizer": None,
                               "lr": None, "epochs": None, "epoch": 0, "train_loss": None,
                               "test_loss": None, "test_acc": None}
        if info is not None:
            row.update(precision=info.precision, optimizer=info.optimizer, lr=info.lr,
                       epochs=info.epochs)
            row.update(self._latest_epoch(info))
        return row

    def _latest_epoch(self, info: TrialInfo) -> dict[str, Any]:
        try:
            stat = self.store.path("epochs", info.trial_id, info.bits).stat()
        except FileNotFoundError:
            return {}
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._epochs.get(info.trial_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        rows = self.store.epochs(info.trial_id, info.bits)  # [] when it does not read back
        latest = max(rows, key=lambda r: r["epoch"], default=None)
        if latest is None:  # replaced while we read it: the next poll reads it again
            return cached[1] if cached else {}
        latest = {name: latest.get(name) for name in _EPOCH_COLUMNS}
        self._epochs[info.trial_id] = (key, latest)
        return latest

    def _from_plan(self, trial_id: str) -> TrialInfo | None:
        """An adaptive search's trials are not known up front: look them up in plan.parquet."""
        path = self.store.plan_path
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        key = (stat.st_mtime_ns, stat.st_size)
        if key != self._plan_key:
            self._plan_key = key
            rows = self.store.plan_rows(["trial_id", "bits", "optimizer", "lr", "epochs"])
            if rows is None:
                return None
            for r in rows:
                self.info.setdefault(r["trial_id"], TrialInfo(
                    r["trial_id"], int(r["bits"]), r["optimizer"], float(r["lr"]),
                    int(r["epochs"])))
        return self.info.get(trial_id)


def describe(row: dict[str, Any]) -> str:
    """'Int4 sgd lr=0.05 epoch 3/15 loss 0.412 acc 88.1%' for one running-trial row."""
    if row["precision"] is None:
        return f"{row['trial_id']} (starting)"
    text = f"{row['precision']} {row['optimizer']} lr={row['lr']:g} " \
           f"epoch {row['epoch']}/{row['epochs']}"
    if row["train_loss"] is not None:
        text += f" loss {row['train_loss']:.3f}"
    if row["test_acc"] is not None and row["test_acc"] == row["test_acc"]:  # not NaN
        text += f" acc {100 * row['test_acc']:.1f}%"
    return text
