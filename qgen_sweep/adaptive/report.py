"""What an adaptive sweep adds to `status` and `report`: per study its progress toward n_trials,
the best configuration per precision, and Optuna's hyperparameter importances.

Everything is read from the journal (`<results>/optuna/journal.log`) without writing to it, so it
is safe while a launch runs. A results directory without a journal (a grid sweep) gives nothing.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any


def journals(results_dir: Path | str) -> list[Path]:
    """Journal files of one results directory, or of the sweeps right below it (`runs/`)."""
    from qgen_sweep.store import ResultsStore

    root = Path(results_dir)
    own = ResultsStore(root).journal_path
    if own.is_file():
        return [own]
    below = (ResultsStore(sub).journal_path for sub in sorted(root.iterdir()) if sub.is_dir()) \
        if root.is_dir() else ()
    return [path for path in below if path.is_file()]


def _studies(journal: Path) -> list[Any]:
    import optuna

    from qgen_sweep.adaptive.study import open_storage

    storage = open_storage(journal.parent.parent)
    return [optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def _config_text(params: dict[str, Any]) -> str:
    """'sgd lr=0.05 wd=0.0001 depth=3 width=10' from a trial's parameters."""
    parts = []
    for name, value in sorted(params.items(), key=lambda kv: kv[0] != "optimizer"):
        name = "lr" if name.startswith("lr_") else name
        name = "wd" if name == "weight_decay" else name
        parts.append(str(value) if name == "optimizer" else f"{name}={value:g}"
                     if isinstance(value, float) else f"{name}={value}")
    return " ".join(parts)


def _best_by_bits(study: Any) -> dict[int | None, Any]:
    """The best COMPLETE trial per precision (the study's own when bits is fixed)."""
    from optuna.trial import TrialState

    fixed = study.user_attrs.get("bits")
    sign = 1 if study.direction.name == "MINIMIZE" else -1
    best: dict[int | None, Any] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        bits = fixed if fixed is not None else trial.params.get("bits")
        if bits not in best or sign * trial.value < sign * best[bits].value:
            best[bits] = trial
    return best


def _study_row(study: Any) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    from qgen_sweep.adaptive.study import ATTR_OUTCOME, ATTR_REUSED, ATTR_TRIAL_ID, counts

    trials = study.get_trials(deepcopy=False)
    base = {
        "sweep": study.user_attrs.get("sweep"), "study": study.study_name,
        "objective": study.user_attrs.get("objective"),
        "direction": study.direction.name.lower(),
        "requested": study.user_attrs.get("n_trials"),
        "finished": sum(counts(t) for t in trials),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
        "reused": sum(bool(t.user_attrs.get(ATTR_REUSED)) for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "diverged": sum(t.user_attrs.get(ATTR_OUTCOME) == "diverged" for t in trials),
        "failed": sum(t.user_attrs.get(ATTR_OUTCOME) == "failed" for t in trials),
    }
    best = _best_by_bits(study)
    if not best:
        return [{**base, "bits": study.user_attrs.get("bits"), "best_value": None,
                 "best_trial_id": None, "best_config": None, "best_number": None}]
    return [{**base, "bits": bits, "best_value": trial.value,
             "best_trial_id": trial.user_attrs.get(ATTR_TRIAL_ID), "best_number": trial.number,
             "best_config": _config_text({k: v for k, v in trial.params.items() if k != "bits"})}
            for bits, trial in sorted(best.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))]


def study_rows(results_dir: Path | str) -> list[dict[str, Any]]:
    """One row per study and precision: progress, best value, its trial id and configuration."""
    rows: list[dict[str, Any]] = []
    for journal in journals(results_dir):
        for study in _studies(journal):
            rows += _study_row(study)
    return rows


def importance_rows(results_dir: Path | str) -> list[dict[str, Any]]:
    """Optuna's hyperparameter importances per study (PED-ANOVA, Optuna 5's default evaluator,
    which also rates the conditional per-optimizer learning rates). Studies with fewer than two
    distinct finished configurations have none."""
    import optuna
    from optuna.trial import TrialState

    rows = []
    for journal in journals(results_dir):
        for study in _studies(journal):
            complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if len({tuple(sorted(t.params.items())) for t in complete}) < 2:
                continue
            try:
                with warnings.catch_warnings():  # "few trials per regime": expected early on
                    warnings.simplefilter("ignore", UserWarning)
                    importances = optuna.importance.get_param_importances(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # e.g. every finished trial has the same value
            for param, value in importances.items():
                if math.isfinite(value):
                    rows.append({"sweep": study.user_attrs.get("sweep"),
                                 "study": study.study_name, "param": param,
                                 "importance": float(value), "trials": len(complete)})
    return rows


def report_sections(results_dir: Path | str) -> dict[str, list[dict[str, Any]]]:
    """The report sections of an adaptive sweep ({} for a grid sweep):

    - `optuna_best`: per study and precision, the best configuration and its objective value;
    - `optuna_importances`: per study, each searched parameter's importance (sums to 1).
    """
    if not journals(results_dir):
        return {}
    best = [{k: r[k] for k in ("sweep", "study", "bits", "objective", "direction", "finished",
                               "requested", "best_value", "best_trial_id", "best_config")}
            for r in study_rows(results_dir)]
    return {"optuna_best": best, "optuna_importances": importance_rows(results_dir)}


def status_lines(results_dir: Path | str) -> list[str]:
    """Lines `qgen-sweep status` prints under its table for an adaptive sweep."""
    rows = study_rows(results_dir)
    if not rows:
        return []
    first = rows[0]
    lines = [f"adaptive search: {first['direction']} {first['objective']}; best trial so far "
             f"per precision"]
    for r in rows:
        value = "-" if r["best_value"] is None else f"{r['best_value']:.4f}"
        extra = ", ".join(f"{r[k]} {k}" for k in ("running", "reused", "pruned", "diverged",
                                                   "failed") if r[k])
        lines.append(f"  bits={r['bits']}: {r['finished']}/{r['requested']} finished"
                     f"{' (' + extra + ')' if extra else ''}; best {value}")
        if r["best_trial_id"]:
            lines.append(f"    trial {r['best_trial_id']}: {r['best_config']}")
    return lines


_TITLES = {"optuna_best": "Adaptive search: best configuration per precision",
           "optuna_importances": "Adaptive search: hyperparameter importances"}


def sections(con: Any, results_dir: Path, plots_dir: Path | None,
             formats: tuple[str, ...] = ()) -> tuple[list[Any], list]:
    """The report's provider (analysis.report.SECTION_PROVIDERS): the best configurations and
    importances of an adaptive search (none for a grid)."""
    from qgen_sweep.analysis.report import Section

    found = report_sections(results_dir)
    return [Section(key, _TITLES[key], found[key]) for key in _TITLES if key in found], []
