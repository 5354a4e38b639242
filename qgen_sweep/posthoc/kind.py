"""What one kind of post-hoc per-trial job is: the store kind it writes, its job, its words."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JobKind:
    """One kind of per-trial job. Plain strings only, so it travels to Ray workers as it is.

    `store_kind` names its entry in qgen_sweep.store.KINDS, which holds the result folder, the
    SweepLock role and the failure folder. `job` is "module:function" with the signature
    (results_dir, trial_row, settings_dict) -> summary dict (build it with
    qgen_sweep.posthoc.job.run_guarded); it runs in the worker and may import torch, so the
    driver never imports its module.
    """

    command: str  # CLI command, also the lock holder's name in refusal messages ("measure")
    store_kind: str  # qgen_sweep.store.KINDS entry ("measures")
    job: str  # "module:function" run per trial in the worker
    verb: str  # "2 to <verb>" ("measure")
    done: str  # status of a job that finished, "already <done>" ("measured")

    def job_function(self) -> Callable[[str, dict[str, Any], dict[str, Any]], dict[str, Any]]:
        """Import and return the job function (called in the worker, or in-process)."""
        module, _, name = self.job.partition(":")
        return getattr(importlib.import_module(module), name)

    @property
    def lock(self) -> str:
        from qgen_sweep.store import KINDS

        return KINDS[self.store_kind].lock

    @property
    def failures(self) -> str:
        from qgen_sweep.store import KINDS

        return KINDS[self.store_kind].failures or ""
