"""Adaptive search: Optuna studies over the QGen space, run through Ray Tune.

- `settings`: the spec's `[optuna]` table (stdlib only; spec.py imports it).
- `study`: the search space, samplers, journal storage, the ledger rules (reuse of finished
  configurations, budgets, resume of a killed driver), best trials and importances.
- `launch`: `launch` / `resume` / `--dry-run` / `validate` for `search = "optuna"` sweeps.
- `report`: the best configuration per precision and the hyperparameter importances for
  `qgen-sweep report` and `qgen-sweep status`.
The Ray Tune wiring (OptunaSearch, ASHA) is in `qgen_sweep/backends/ray_optuna.py`.
Nothing here imports optuna or ray at import time.
"""
