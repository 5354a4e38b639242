"""Evaluate one stored trial on corrupted test sets: robustness/bits=B/<trial_id>.parquet.

`run_job` is the job of `qgen-sweep robustness` (qgen_sweep.robustness.select.ROBUSTNESS), run
per trial by the shared post-hoc runner (a Ray task, or in-process with `--backend local`). The
trial's file holds one row per (source, corruption, severity); sets already there are kept, the
missing ones are evaluated, and the file is rewritten atomically after each corruption, so a
killed job keeps what it finished and a rerun adds only the rest (never a second row).
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch

from qgen_sweep.provenance import host, now, versions_json
from qgen_sweep.robustness.schema import KEY, ROBUSTNESS_SCHEMA
from qgen_sweep.robustness.settings import RobustnessSettings
from qgen_sweep.robustness.sources import CorruptedSource, normalise, open_source
from qgen_sweep.store import ResultsStore


def _key(row: dict[str, Any]) -> tuple:
    return tuple(row[k] for k in KEY)


def _row(trial: dict[str, Any], source: CorruptedSource, corruption: str, severity: int,
         result: tuple[float, float, int, float], device: torch.device) -> dict[str, Any]:
    loss, accuracy, images, seconds = result
    return {
        "trial_id": trial["trial_id"], "sweep": trial.get("sweep"), "dataset": trial["dataset"],
        "bits": trial["bits"], "source": source.source, "layout": source.layout,
        "corruption": corruption, "severity": severity, "images": images, "loss": loss,
        "accuracy": accuracy, "gap": loss - trial["train_loss"],
        "clean_train_loss": trial["train_loss"], "clean_test_loss": trial.get("test_loss"),
        "clean_test_acc": trial.get("test_acc"), "seed": source.seed, "data_path": source.path,
        "seconds": seconds, "device": str(device), "host": host(),
        "versions_json": versions_json(), "evaluated_at": now(),
    }


def evaluate_set(model: torch.nn.Module, source: CorruptedSource, data, corruption: str,
                 severity: int, batch_size: int) -> tuple[float, float, int, float]:
    """(mean loss, accuracy, images, seconds) of `model` on one corrupted set, in batches."""
    from qgen_sweep.trial.train import evaluate

    started = time.perf_counter()
    x, y = source.load(corruption, severity)
    loss, accuracy = evaluate(model, normalise(x, data), y, batch_size)
    return loss, accuracy, int(len(y)), time.perf_counter() - started


def evaluate_trial(store: ResultsStore, trial: dict[str, Any],
                   settings: RobustnessSettings) -> None:
    """Evaluate the trial's kept model on every requested set its file does not hold yet."""
    from qgen_sweep.trial.config import TrialConfig, TrialRuntime
    from qgen_sweep.trial.data import data_root, load_dataset, resolve_device
    from qgen_sweep.trial.train import load_model

    if settings.threads:
        torch.set_num_threads(settings.threads)
    rows = {_key(r): r for r in store.rows("robustness", trial["trial_id"], trial["bits"])}
    todo = [(c, s) for c in settings.corruptions for s in settings.severities
            if (settings.source, c, s) not in rows]
    if not todo:
        return
    config = TrialConfig.from_dict(json.loads(trial["config_json"]))
    device = resolve_device(settings.device)
    runtime = TrialRuntime(device=str(device), data_dir=settings.data_dir)
    model, _ = load_model(store.checkpoint_dir(trial["trial_id"]), config, which="best",
                          device=str(device))
    data = load_dataset(config.dataset, runtime)
    source = open_source(settings.source, data, settings.seed, data_root(runtime),
                         settings.corrupted_dir)
    for corruption in dict.fromkeys(c for c, _ in todo):
        for severity in (s for c, s in todo if c == corruption):
            result = evaluate_set(model, source, data, corruption, severity,
                                  settings.eval_batch_size)
            row = _row(trial, source, corruption, severity, result, device)
            rows[_key(row)] = row
        store.write_rows("robustness", trial["trial_id"], trial["bits"],
                         sorted(rows.values(), key=_order), ROBUSTNESS_SCHEMA)


def _order(row: dict[str, Any]) -> tuple:
    return row["source"], row["corruption"], row["severity"]


def run_job(results_dir: str, trial: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Evaluate one trial; a failure becomes a row under robustness_failures/, never an
    exception. Returns {"trial_id", "bits", "status": "evaluated" | "failed", "seconds",
    "message"}."""
    from qgen_sweep.posthoc.job import run_guarded
    from qgen_sweep.robustness.select import ROBUSTNESS

    return run_guarded(ROBUSTNESS, results_dir, trial, lambda store, row: evaluate_trial(
        store, row, RobustnessSettings.from_dict(settings)))
