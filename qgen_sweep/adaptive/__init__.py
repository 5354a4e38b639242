"""Adaptive search: Optuna studies over the QGen space, one search strategy of the launcher.

- `strategy`: `OptunaSearch`, the strategy of `search = "optuna"` sweeps (validate, dry run,
  what is left to run, completeness), and `StudiesSource`, the TaskSource any backend runs:
  Optuna's ask / tell around each trial, and the per-epoch values a pruner needs.
- `study`: the search space, samplers, journal storage, the ledger rules (reuse of finished
  configurations, budgets, resume of a killed driver).
- `report`: the best configuration per precision and the hyperparameter importances for
  `qgen-sweep report` and `qgen-sweep status`.
The spec's `[optuna]` table is parsed by qgen_sweep/spec_optuna.py. Nothing here imports optuna
or ray at import time, and nothing here knows which backend runs the trials.
"""
