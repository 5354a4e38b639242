"""Opt-in TensorBoard logging of a trial (`launch --log tensorboard`), beside the Parquet rows.

    <results>/tensorboard/<trial_id>/           per-epoch scalars (step = epoch)
    <results>/tensorboard/<trial_id>/hparams/   the trial's hyperparameters and final metrics

View them with `tensorboard --logdir runs/SWEEP/tensorboard` (pip install tensorboard): the
Scalars tab has the curves, the HParams tab one row per finished trial. Written with tensorboardX
(installed with Ray Tune). The Parquet store stays the ledger: these files are a view, never read
back. A retried attempt continues at its first untrained epoch with `purge_step`, so TensorBoard
drops what the killed attempt logged after its checkpoint instead of showing the epochs twice.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from qgen_sweep.trial.config import COLUMN_FIELDS, EpochMetrics

LOGGERS = ("tensorboard",)  # the values `launch --log` takes
FOLDER = "tensorboard"
# Hyperparameters shown in the HParams tab: the config columns of a trial row (the grid's axes
# and the training protocol).
HPARAMS = COLUMN_FIELDS
# Final metrics of a trial (accuracies in percent, losses and gap in nats).
METRICS = ("train_acc", "test_acc", "train_loss", "test_loss", "gap")


def trial_dir(root: Path | str, trial_id: str) -> Path:
    return Path(root) / FOLDER / trial_id


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


class TensorBoardLog:
    """The per-epoch scalars of one trial attempt; the writer opens at the first epoch."""

    def __init__(self, root: Path | str, trial_id: str, attempt: int = 1) -> None:
        self.logdir = trial_dir(root, trial_id)
        self.attempt = attempt
        self._writer: Any = None

    def epoch(self, m: EpochMetrics) -> None:
        """Log one finished epoch (losses in nats, accuracies in percent) and flush it."""
        if self._writer is None:
            from tensorboardX import SummaryWriter

            # tensorboardX names event files by the second and the host: a retry in the same
            # process within that second would overwrite the failed attempt's file without
            # the attempt in the name.
            self._writer = SummaryWriter(str(self.logdir), purge_step=m.epoch,
                                         filename_suffix=f".attempt{self.attempt}")
        scalars = {"loss/train": m.train_loss, "loss/test": m.test_loss,
                   "accuracy/train": 100 * m.train_acc, "accuracy/test": 100 * m.test_acc,
                   "lr": m.lr, "seconds": m.seconds, "step_size/mean": m.step_size_mean}
        if _finite(m.test_loss) and _finite(m.train_loss):
            scalars["gap"] = m.test_loss - m.train_loss
        for tag, value in scalars.items():
            if _finite(value):
                self._writer.add_scalar(tag, value, m.epoch)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def log_final(root: Path | str, row: dict[str, Any]) -> None:
    """The finished trial's hyperparameters and final metrics (one row of the HParams tab)."""
    from tensorboardX import SummaryWriter

    hparams = {k: row[k] for k in HPARAMS if row.get(k) is not None}
    metrics = {}
    for key in METRICS:
        value = row.get(key)
        if _finite(value):
            metrics[f"hparam/{key}"] = 100 * value if key.endswith("_acc") else value
    writer = SummaryWriter(str(trial_dir(root, row["trial_id"])))
    try:
        writer.add_hparams({**hparams, "status": row["status"]}, metrics, name="hparams")
    finally:
        writer.close()
