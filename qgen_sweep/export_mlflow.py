"""`qgen-sweep export --mlflow URI`: push finished trials into MLflow as runs.

One MLflow run per finished trial (done, collapsed or diverged), in an experiment named after the
sweep (or --experiment):

- params: the trial's configuration (every TrialConfig field, from config_json);
- metrics: the final train / test accuracy (%), loss (nats), gap (nats), weight L2 norm and
  seconds, and the per-epoch train / test loss and accuracy and learning rate (step = epoch);
- tags: qgen.trial_id, qgen.sweep, qgen.status, qgen.precision, qgen.engine, qgen.git_rev;
- start / end time: the trial's own.

Export is idempotent: a trial whose qgen.trial_id tag is already in the experiment is skipped, so
running it again after more trials finished adds only those. Rows come from the DuckDB layer
(read-only; `--where` through the sandbox); mlflow is an optional extra
(pip install 'qgen-sweep[mlflow]'), imported only here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgen_sweep.errors import QGenError

EXPORTED = ("done", "collapsed", "diverged")  # statuses with a final row
TRIAL_COLUMNS = ["trial_id", "sweep", "bits", "precision", "status", "config_json", "train_acc",
                 "test_acc", "train_loss", "test_loss", "gap", "l2_norm", "seconds", "engine",
                 "git_rev", "started_at", "finished_at", "epochs_run"]
FINAL_METRICS = {"train_acc": 100.0, "test_acc": 100.0, "train_loss": 1.0, "test_loss": 1.0,
                 "gap": 1.0, "l2_norm": 1.0, "seconds": 1.0}  # name -> scale (accuracies in %)
EPOCH_METRICS = {"train_loss": 1.0, "test_loss": 1.0, "train_acc": 100.0, "test_acc": 100.0,
                 "lr": 1.0}
BATCH = 1000  # MLflow's limit of metrics per log_batch call
TAG = "qgen.trial_id"


def _mlflow():
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise QGenError("export --mlflow needs MLflow: pip install 'qgen-sweep[mlflow]' "
                        "(mlflow-skinny and SQLAlchemy)") from None
    return mlflow, MlflowClient


def finished_trials(results_dir: Path, where: str | None) -> list[dict[str, Any]]:
    """The finished trials of `results_dir` matching `where`, with their epochs attached
    (a StoreError when there are none)."""
    from qgen_sweep.analysis.db import connect
    from qgen_sweep.analysis.sandbox import select_where
    from qgen_sweep.errors import StoreError

    con = connect(results_dir, kinds=("plan", "trials", "epochs"))
    statuses = ", ".join(f"'{s}'" for s in EXPORTED)
    trials = select_where(con, "trials", where, TRIAL_COLUMNS,
                          condition=f"status IN ({statuses})", order_by="sweep, bits, trial_id")
    epochs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    result = con.execute("SELECT sweep, trial_id, epoch, train_loss, test_loss, train_acc, "
                         "test_acc, lr FROM epochs ORDER BY sweep, trial_id, epoch")
    names = [d[0] for d in result.description]
    for row in result.fetchall():
        record = dict(zip(names, row, strict=True))
        epochs.setdefault((record["sweep"], record["trial_id"]), []).append(record)
    if not trials:
        raise StoreError(f"no finished trials{' matching --where' if where else ''} in "
                         f"{results_dir} to export (run `qgen-sweep launch SWEEP` first)")
    return [{**t, "epochs": epochs.get((t["sweep"], t["trial_id"]), [])} for t in trials]


def _millis(value: Any) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def _metrics(trial: dict[str, Any], metric_cls: Any) -> list[Any]:
    """Final metrics (step 0, at the end time) and per-epoch series (step = epoch)."""
    end = _millis(trial["finished_at"]) or 0
    out = [metric_cls(name, trial[name] * scale, end, 0) for name, scale in FINAL_METRICS.items()
           if trial.get(name) is not None and math.isfinite(trial[name])]
    for row in trial["epochs"]:
        for name, scale in EPOCH_METRICS.items():
            value = row.get(name)
            if value is not None and math.isfinite(value):
                out.append(metric_cls(f"epoch/{name}", value * scale, end, int(row["epoch"])))
    return out


def _params(trial: dict[str, Any], param_cls: Any) -> list[Any]:
    config = json.loads(trial["config_json"])
    return [param_cls(key, json.dumps(value) if isinstance(value, (list, dict)) else str(value))
            for key, value in sorted(config.items())]


def _tags(trial: dict[str, Any]) -> dict[str, str]:
    tags = {TAG: trial["trial_id"], "qgen.sweep": trial["sweep"], "qgen.status": trial["status"],
            "qgen.precision": trial["precision"], "qgen.engine": trial.get("engine") or "single"}
    if trial.get("git_rev"):
        tags["qgen.git_rev"] = trial["git_rev"]
    return tags


def run_name(trial: dict[str, Any]) -> str:
    """'Int4 sgd lr=0.05 wd=0.0001 d2 w8' from the trial's configuration."""
    c = json.loads(trial["config_json"])
    return (f"{trial['precision']} {c['optimizer']} lr={c['lr']:g} wd={c['weight_decay']:g} "
            f"d{c['depth']} w{c['width']}")


def exported_ids(client: Any, experiment_id: str) -> set[str]:
    """qgen.trial_id tags of the experiment's runs (all pages)."""
    ids, token = set(), None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        ids |= {run.data.tags[TAG] for run in page if TAG in run.data.tags}
        token = page.token
        if not token:
            return ids


def export(trials: list[dict[str, Any]], uri: str, experiment: str | None = None,
           on_run: Callable[[dict[str, Any], bool], None] = lambda trial, new: None
           ) -> dict[str, int]:
    """Export `trials` (from `finished_trials`) to the MLflow tracking server / store at `uri`;
    returns {"exported", "skipped"}. `on_run(trial, new)` sees each trial as it is handled."""
    _, client_cls = _mlflow()
    from mlflow.entities import Metric, Param, RunStatus

    client = client_cls(tracking_uri=uri)
    counts = {"exported": 0, "skipped": 0}
    experiments: dict[str, tuple[str, set[str]]] = {}
    for trial in trials:
        name = experiment or trial["sweep"]
        if name not in experiments:
            found = client.get_experiment_by_name(name)
            exp_id = found.experiment_id if found else client.create_experiment(name)
            experiments[name] = (exp_id, exported_ids(client, exp_id))
        exp_id, done = experiments[name]
        if trial["trial_id"] in done:
            counts["skipped"] += 1
            on_run(trial, False)
            continue
        run = client.create_run(exp_id, start_time=_millis(trial["started_at"]),
                                tags=_tags(trial), run_name=run_name(trial))
        run_id = run.info.run_id
        client.log_batch(run_id, params=_params(trial, Param))
        metrics = _metrics(trial, Metric)
        for start in range(0, len(metrics), BATCH):
            client.log_batch(run_id, metrics=metrics[start:start + BATCH])
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED),
                              end_time=_millis(trial["finished_at"]))
        done.add(trial["trial_id"])
        counts["exported"] += 1
        on_run(trial, True)
    return counts
