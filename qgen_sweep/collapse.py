"""Collapsed runs: trials that trained to the end without a NaN but learned nothing.

On the full digits grid some Int2 / Int4 trials end at chance accuracy with huge finite training
losses (up to 3e11 nats); as 'done' results they dominate every mean and paired interval. A
finished trial is *collapsed* when its final (kept-model) training accuracy is at most
ACC_FACTOR x chance (chance = 1 / classes), or its final training loss is above LOSS_FACTOR x the
loss of a uniform prediction (ln(classes) nats). docs/science.md states the rule.

The status is derived when the results are read (the `trials` view, `qgen-sweep status`), never
written into the trial rows: stores written before the rule existed are classified the same way,
and the ledger keeps the engine's own outcome ('done' = trained to the end). `collapsed_sql`
renders the same rule as DuckDB macros for the analysis views.
"""

from __future__ import annotations

import math

from qgen_sweep.trial.config import NUM_CLASSES

ACC_FACTOR = 1.5  # at most 1.5 x chance accuracy: e.g. <= 15% on 10 classes
LOSS_FACTOR = 10.0  # above 10 x ln(classes) nats: e.g. > 23.0 on 10 classes


def is_collapsed(dataset: str, train_acc: float | None, train_loss: float | None) -> bool:
    """True when a finished trial of `dataset` with these final training metrics collapsed.

    Unknown datasets and missing metrics are never collapsed (there is no chance level to compare
    against); NaN metrics belong to diverged trials, which keep their own status.
    """
    classes = NUM_CLASSES.get(dataset)
    if classes is None:
        return False
    low_acc = train_acc is not None and train_acc <= ACC_FACTOR / classes
    high_loss = train_loss is not None and train_loss > LOSS_FACTOR * math.log(classes)
    return bool(low_acc or high_loss)


def collapsed_sql(included: bool = False) -> list[str]:
    """DuckDB statements defining the rule for the views (run before analysis/views.sql).

    is_collapsed(dataset, train_acc, train_loss) -> BOOLEAN, the rule above; collapsed_status()
    -> the status a collapsed trial shows: 'collapsed' (kept out of every statistic that counts
    status = 'done'), or 'done' when `included` (report --include-collapsed).
    """
    cases = " ".join(f"WHEN '{name}' THEN {classes}" for name, classes in NUM_CLASSES.items())
    classes = f"(CASE dataset {cases} END)"
    return [
        # NaN compares greater than everything in DuckDB but false in Python: leave it out.
        "CREATE OR REPLACE MACRO is_collapsed(dataset, train_acc, train_loss) AS coalesce("
        f"(NOT isnan(train_acc) AND train_acc <= {ACC_FACTOR!r} / {classes}) "
        f"OR (NOT isnan(train_loss) AND train_loss > {LOSS_FACTOR!r} * ln({classes})), false)",
        "CREATE OR REPLACE MACRO collapsed_status() AS "
        f"'{'done' if included else 'collapsed'}'",
    ]
