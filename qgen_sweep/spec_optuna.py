"""The `[optuna]` table of a sweep spec -> a validated, frozen `OptunaSettings` (stdlib only).

    search = "optuna"
    [optuna]
    sampler = "tpe"            # "tpe" (default) or "random"
    objective = "test_loss"    # a numeric column of the trials table
    direction = "minimize"     # or "maximize"
    n_trials = 60              # finished trials wanted per study
    per_precision = true       # one study per value of grid.bits (bits fixed per study)
    pruner = "none"            # or "asha": Ray Tune's ASHA on the per-epoch objective
    grace_epochs = 10          # ASHA: epochs every trial gets before it may be stopped
    reduction_factor = 3       # ASHA: keep about 1/3 of the trials at each rung
    startup_trials = 10        # TPE: random suggestions before the model is used
    seed = 0                   # sampler seed

The search space is the spec's `[grid]` axes (each list a categorical choice, the learning rate
conditional on the optimizer via `[grid.lr]`), so every suggested trial is a grid point with the
grid's content-addressed trial id. Part of the spec layer (spec.py imports it): standard library
only, no optuna, and no import of spec.py itself (problems are reported through a callback). The
search that runs these settings is qgen_sweep/adaptive/.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SAMPLERS = ("tpe", "random")
DIRECTIONS = ("minimize", "maximize")
PRUNERS = ("none", "asha")
# Numeric columns of store.TRIAL_SCHEMA an objective may name.
OBJECTIVES = ("test_loss", "test_acc", "train_loss", "train_acc", "gap", "l2_norm")
# Objectives that exist per epoch (EpochMetrics), which ASHA needs to compare trials early.
PER_EPOCH_OBJECTIVES = ("test_loss", "test_acc", "train_loss", "train_acc", "gap")

_TYPES: dict[str, type | tuple[type, ...]] = {
    "sampler": str, "objective": str, "direction": str, "n_trials": int, "per_precision": bool,
    "pruner": str, "grace_epochs": int, "reduction_factor": int, "startup_trials": int,
    "seed": int,
}
OPTUNA_FIELDS = tuple(_TYPES)
_CHOICES = {"sampler": SAMPLERS, "direction": DIRECTIONS, "pruner": PRUNERS,
            "objective": OBJECTIVES}
_MINIMUM = {"n_trials": 1, "grace_epochs": 1, "reduction_factor": 2, "startup_trials": 0,
            "seed": 0}
# Every integer is at most 2**31 - 1: the sampler's seed is seed + trials so far, and numpy
# (under Optuna's samplers) takes seeds in [0, 2**32 - 1] only.
_MAXIMUM = 2**31 - 1


@dataclass(frozen=True)
class OptunaSettings:
    """How an adaptive sweep searches: sampler, objective, budget, studies and pruner."""

    objective: str = "test_loss"
    direction: str = "minimize"
    n_trials: int = 20  # finished trials wanted per study (reused suggestions count)
    sampler: str = "tpe"
    per_precision: bool = True  # the paper compares precisions: tune each one on its own
    pruner: str = "none"
    grace_epochs: int = 1
    reduction_factor: int = 3  # ASHA's default eta
    startup_trials: int = 10  # Optuna's TPESampler default n_startup_trials
    seed: int = 0

    @property
    def mode(self) -> str:
        """Ray Tune's name for the direction."""
        return "min" if self.direction == "minimize" else "max"


Problem = Callable[[str, str], None]  # add(key, message)


def _type_name(kind: type | tuple[type, ...]) -> str:
    """The type with its article, for "must be an integer"."""
    return {str: "a string", int: "an integer", bool: "a boolean"}[kind]  # type: ignore[index]


def _check(add: Problem, name: str, value: Any) -> bool:
    kind = _TYPES[name]
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok:
        add(f"optuna.{name}", f"must be {_type_name(kind)}, but got {value!r}")
        return False
    if name in _CHOICES and value not in _CHOICES[name]:
        add(f"optuna.{name}", f"{value!r} is not allowed; allowed: {', '.join(_CHOICES[name])}")
        return False
    if name in _MINIMUM and value < _MINIMUM[name]:
        add(f"optuna.{name}", f"must be an integer >= {_MINIMUM[name]}, but got {value!r}")
        return False
    if isinstance(value, int) and not isinstance(value, bool) and value > _MAXIMUM:
        add(f"optuna.{name}", f"must be an integer <= {_MAXIMUM}, but got {value!r}")
        return False
    return True


def parse_optuna(table: Any, search: str, add: Problem,
                 unknown: Callable[[str, str, Any], None]) -> OptunaSettings | None:
    """Validate the `[optuna]` table; None for a grid sweep. Problems go to `add` / `unknown`."""
    if search != "optuna":
        if table is not None:
            add("optuna", f"only allowed with search = \"optuna\", but search = {search!r}; "
                          f"remove [optuna] or set search = \"optuna\"")
        return None
    if table is None:
        table = {}
    if not isinstance(table, dict):
        add("optuna", f"must be a table, but got {table!r}")
        return None
    values: dict[str, Any] = {}
    for name, value in table.items():
        if name not in _TYPES:
            unknown("optuna.", name, OPTUNA_FIELDS)
        elif _check(add, name, value):
            values[name] = value
    settings = OptunaSettings(**values)
    if settings.pruner == "asha" and settings.objective not in PER_EPOCH_OBJECTIVES:
        add("optuna.pruner", f"\"asha\" compares trials by their per-epoch objective, which "
                             f"{settings.objective!r} does not have; use one of "
                             f"{', '.join(PER_EPOCH_OBJECTIVES)} or pruner = \"none\"")
    return settings


def identity(settings: OptunaSettings) -> dict[str, Any]:
    """The settings that define the studies (hashed with the spec), as a plain dict.

    `n_trials` is left out: it is a budget, so raising it (`--set optuna.n_trials=80`) continues
    the same studies in the same results directory instead of refusing them as another sweep.
    """
    return {k: v for k, v in dataclasses.asdict(settings).items() if k != "n_trials"}
