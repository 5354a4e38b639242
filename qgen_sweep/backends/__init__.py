"""Where trials run: one interface for every backend, whatever search picks the trials.

A backend runs the tasks of a `TaskSource` (see below) with a `RunContext` (what every trial of
the launch shares) and `RunSettings` (scheduling), reporting to a `Progress`:

    run_tasks("ray" | "local", source, ctx, settings, progress)

`ray` (Ray Tune; `ray.py` and its helpers `ray_ddp.py`, `ray_tasks.py` are the only modules that
import ray) and `local` (in-process, for debugging and fast tests) execute; `runner` is the
per-trial work both share (store rows, attempts log, provenance, fault injection), so a Ray retry
and a `resume` are the same thing: call the trial engine again on the trial's checkpoint
directory. Backends know nothing of how a search chooses its trials: the grid hands them a
`FixedTasks`, an adaptive search its own source of suggestions (qgen_sweep/adaptive/).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from qgen_sweep.trial.config import TrialConfig, bundle_id

if TYPE_CHECKING:
    from qgen_sweep.backends.progress import Progress

DEFAULT_TRIAL_FN = "qgen_sweep.trial.train:run_trial"
# The backends by name; each module defines run(source, ctx, settings, progress).
BACKENDS = {"ray": "qgen_sweep.backends.ray", "local": "qgen_sweep.backends.local"}
FINISHED = "FINISHED"  # TaskSource.next_task: no task will ever come again (Ray's own word)


@dataclass(frozen=True)
class RunContext:
    """What every trial of one launch shares; small and picklable (shipped to Ray workers once)."""

    store_root: str
    sweep: str
    runtime: dict[str, Any]  # TrialRuntime fields
    provenance: dict[str, Any] = field(default_factory=dict)  # git_rev, versions_json
    trial_fn: str = DEFAULT_TRIAL_FN  # "module:function" with run_trial's signature
    fault_file: str | None = None  # QGEN_FAULT_INJECTION of the driver (tests only)
    loggers: tuple[str, ...] = ()  # `launch --log`: "tensorboard" (backends/tensorboard.py)
    lease: str | None = None  # the launch's SweepLock token: rows are written only while it holds


@dataclass(frozen=True)
class RunSettings:
    """Scheduling for one launch (resources are never part of a trial id)."""

    cpu: float
    gpu: float
    max_concurrent: int  # 0 = as many as resources allow
    max_failures: int  # retries after the first failed attempt
    address: str | None = None  # Ray cluster address; None = start a local one
    # > 0: each trial is that many data-parallel workers with one GPU each (Ray Train;
    # backends/ray_ddp.py), `cpu` each; 0: one process per trial with `cpu` and `gpu`
    gpus_per_trial: int = 0


@dataclass(frozen=True)
class Pruning:
    """Early stopping of unpromising trials by their per-epoch objective (Ray Tune's ASHA; the
    local backend runs every trial to the end). `max_epochs`: the longest trial's epochs."""

    objective: str  # a final-row column with a per-epoch value (train_loss, gap, test_acc, ...)
    mode: str  # "min" | "max"
    max_epochs: int
    grace_epochs: int  # no trial is stopped before this epoch
    reduction_factor: int  # ASHA keeps 1 / reduction_factor of the trials at each rung


class TaskSource(Protocol):
    """What a backend runs. `tasks`: every task, when they are known up front (a grid: the
    backend may schedule them all at once), else None and the backend asks `next_task` whenever
    it can start one, until FINISHED. `on_epoch` / `on_complete` tell the source how a task it
    handed out goes; `pruning`: the source wants unpromising trials stopped early."""

    tasks: list[dict[str, Any]] | None
    pruning: Pruning | None

    def next_task(self) -> dict[str, Any] | str | None:
        """A task to start; None: none now (ask again when a running one completes); or
        FINISHED."""

    def on_epoch(self, task: dict[str, Any], epoch: int, value: float) -> None:
        """The pruning objective of a running task after `epoch` (only with `pruning`)."""

    def on_complete(self, task: dict[str, Any], error: bool) -> None:
        """A task ended: with its final row, failed for good (`error`), or stopped early."""


class FixedTasks:
    """A TaskSource over a list known up front (a grid, or the bundles of a fused grid)."""

    pruning = None

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.tasks = list(tasks)
        self._next = 0

    def next_task(self) -> dict[str, Any] | str:
        if self._next == len(self.tasks):
            return FINISHED
        self._next += 1
        return self.tasks[self._next - 1]

    def on_epoch(self, task: dict[str, Any], epoch: int, value: float) -> None:
        """Nothing to learn: the list is fixed."""

    def on_complete(self, task: dict[str, Any], error: bool) -> None:
        """Nothing to learn: the list is fixed."""


def task_of(trial_id: str, config: TrialConfig, lr_index: int) -> dict[str, Any]:
    """The picklable description of one trial that backends ship to workers."""
    return {"trial_id": trial_id, "bits": config.bits, "lr_index": lr_index,
            "config": config.to_dict()}


def bundle_task_of(members: list[tuple[str, TrialConfig, int]]) -> dict[str, Any]:
    """A picklable task for a fused bundle of (trial_id, config, lr_index) members."""
    tasks = [task_of(tid, config, lr_index) for tid, config, lr_index in members]
    return {"trial_id": "bundle-" + bundle_id([c for _, c, _ in members]),
            "bits": members[0][1].bits, "bundle": tasks}


def run_tasks(backend: str, source: TaskSource, ctx: RunContext, settings: RunSettings,
              progress: Progress) -> None:
    """Run every task `source` gives on `backend` ("ray" or "local"); returns when the source is
    finished, or at an input error (`progress.input_error`), which no retry can mend."""
    if backend not in BACKENDS:
        from qgen_sweep.errors import UsageError

        raise UsageError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    importlib.import_module(BACKENDS[backend]).run(source, ctx, settings, progress)
