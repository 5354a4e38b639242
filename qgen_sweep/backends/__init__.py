"""Where trials run. `launcher` plans and orchestrates; `ray` (the only module importing ray) and
`local` (in-process, for debugging and fast tests) execute; `runner` is the per-trial work both
share (store rows, attempts log, provenance, fault injection), so a Ray retry and a `resume` are
the same thing: call the trial engine again on the trial's checkpoint directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_TRIAL_FN = "qgen_sweep.trial.train:run_trial"


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
