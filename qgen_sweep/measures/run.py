"""Measure one stored trial end to end: checkpoints -> folded plain networks -> searches ->
bounds -> one row of measures/bits=B/<trial_id>.parquet (written atomically).

`run_job` is the unit of work of `qgen-sweep measure` (a Ray task, or in-process with
`--backend local`): it never raises for a failing trial; it records a failure row under
<results>/measure_failures/<trial_id>-<attempt>.parquet (FAILURE_SCHEMA, like trial failures but
in their own folder, so a measure failure never makes a done trial look failed) and returns.
Every file goes through the store (`ResultsStore.write_row`, `record_failure`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from qgen_sweep.errors import Validated
from qgen_sweep.measures import bounds
from qgen_sweep.measures.fold import plain_network, weight_vector
from qgen_sweep.measures.perturb import BatchedEvaluator
from qgen_sweep.measures.schema import FAMILIES, MEASURE_NAMES, MEASURE_SCHEMA, SEARCHES
from qgen_sweep.measures.search import (
    BN_AFFINE,
    NOISE_CONVENTIONS,
    SearchResult,
    SearchSettings,
    pacbayes_search,
    sharpness_search,
)
from qgen_sweep.provenance import host, now, versions_json
from qgen_sweep.store import ResultsStore


@dataclass(frozen=True)
class MeasureSettings(Validated):
    """Everything a measure job needs besides the trial: searches, families, where to run."""

    search: SearchSettings = field(default_factory=SearchSettings)
    families: tuple[str, ...] = FAMILIES
    delta: float = bounds.DELTA
    eval_batch_size: int = 1024  # examples per forward pass (times mc_chunk copies)
    device: str = "auto"
    data_dir: str | None = None
    threads: int | None = None

    def problems(self) -> list[str]:
        """One line per invalid setting (empty when valid)."""
        s = self.search
        out = []
        bad_families = [f for f in self.families if f not in FAMILIES]
        if bad_families or not self.families:
            out.append(f"--only must name some of {', '.join(FAMILIES)}, but got "
                       f"{','.join(self.families)!r}")
        if s.noise not in NOISE_CONVENTIONS:
            out.append(f"noise must be one of {', '.join(NOISE_CONVENTIONS)}, but got {s.noise!r}")
        if s.bn_affine not in BN_AFFINE:
            out.append(f"bn_affine must be one of {', '.join(BN_AFFINE)}, but got "
                       f"{s.bn_affine!r}")
        for name in ("iterations", "mc_samples", "restarts", "ascent_batch_size", "mc_chunk"):
            if getattr(s, name) < 1:
                out.append(f"{name} must be >= 1, but got {getattr(s, name)}")
        if s.ascent_steps < 0:
            out.append(f"ascent_steps must be >= 0, but got {s.ascent_steps}")
        if not 0 <= s.lo < s.hi:
            out.append(f"the search interval must have 0 <= lo < hi, but got [{s.lo}, {s.hi}]")
        if not 0 < s.target_drop < 1 or not 0 < s.tolerance < s.target_drop:
            out.append("need 0 < tolerance < target_drop < 1, but got "
                       f"tolerance={s.tolerance}, target_drop={s.target_drop}")
        if s.magnitude_eps <= 0 or not 0 < self.delta < 1:
            out.append(f"need magnitude_eps > 0 and 0 < delta < 1, but got "
                       f"{s.magnitude_eps}, {self.delta}")
        if self.eval_batch_size < 1:
            out.append(f"eval_batch_size must be >= 1, but got {self.eval_batch_size}")
        return out

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["families"] = list(self.families)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MeasureSettings:
        values = dict(data)
        values["search"] = SearchSettings(**values["search"])
        values["families"] = tuple(values["families"])
        return cls(**values)


def _search(
    name: str, evaluator: BatchedEvaluator, acc0: float, settings: SearchSettings
) -> SearchResult:
    family, magnitude = SEARCHES[name]
    if family == "pacbayes":
        return pacbayes_search(evaluator, acc0, settings, magnitude)
    return sharpness_search(evaluator, acc0, settings, magnitude)


def _flatness(scale: float | None) -> float | None:
    return None if scale is None else 1.0 / scale**2


def measure_networks(
    trained: torch.nn.Sequential,
    init: torch.nn.Sequential,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: MeasureSettings,
    scales: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Every measure column for two folded plain networks (trained and at initialisation).

    Searches of the families in `settings.families` are run; `scales` may carry scales found
    earlier (a previous run with other families), which are reused for their bounds.
    """
    scales = dict(scales or {})
    evaluator = BatchedEvaluator(trained, x, y, settings.eval_batch_size,
                                 perturb=BN_AFFINE[settings.search.bn_affine])
    acc0 = evaluator.clean_accuracy()
    row: dict[str, Any] = {"acc0": acc0}
    for name, (family, _) in SEARCHES.items():
        if family not in settings.families:
            continue
        result = _search(name, evaluator, acc0, settings.search)
        scales[name] = result.value
        row.update({f"{name}_drop": result.drop, f"{name}_iterations": result.iterations,
                    f"{name}_converged": result.converged})
    w, w0 = weight_vector(trained).double().cpu(), weight_vector(init).double().cpu()
    m = int(y.shape[0])
    raw = bounds.all_bounds(w, w0, m, settings.search.magnitude_eps, settings.delta, scales)
    row.update(raw)
    row.update({n: None if raw[f"{n}_raw"] is None else bounds.normalise(raw[f"{n}_raw"], m)
                for n in MEASURE_NAMES})
    row.update({name: scales.get(name) for name in SEARCHES})
    row.update({
        "pacbayes_flatness": _flatness(scales.get("sigma")),
        "pacbayes_mag_flatness": _flatness(scales.get("sigma_mag")),
        "sharpness_flatness": _flatness(scales.get("alpha")),
        "sharpness_mag_flatness": _flatness(scales.get("alpha_mag")),
        "m": m,
        "omega": int(w.numel()),
        "l2_norm": float(w.norm()),
        "dist_init": float((w - w0).norm()),
        "train_passes": evaluator.counter.passes(m),
    })
    return row


def existing_row(store: ResultsStore, trial_id: str, bits: int) -> dict[str, Any] | None:
    """The trial's measures row, or None when it has none (or it does not read back)."""
    return store.row("measures", trial_id, bits)


def done_families(row: dict[str, Any] | None) -> set[str]:
    """Families a measures row holds."""
    if not row or not row.get("families"):
        return set()
    return set(row["families"].split(","))


def _settings_columns(settings: MeasureSettings) -> dict[str, Any]:
    s = settings.search
    keep = ("noise", "bn_affine", "seed", "iterations", "target_drop", "tolerance", "mc_samples",
            "restarts", "ascent_steps", "ascent_lr", "ascent_batch_size", "magnitude_eps")
    return {**{k: getattr(s, k) for k in keep}, "delta": settings.delta,
            "settings_json": json.dumps(settings.to_dict(), sort_keys=True)}


def measure_trial(store: ResultsStore, trial: dict[str, Any], settings: MeasureSettings) -> Path:
    """Measure one finished trial of `store` (a trials row) and write its measures file.

    Families already present in its measures file are kept (their scales reused) and only the
    missing ones are searched; with none missing the file is left as it is.
    """
    from qgen_sweep.trial.config import TrialConfig, TrialRuntime
    from qgen_sweep.trial.data import load_dataset, resolve_device
    from qgen_sweep.trial.train import l2_norm, load_model

    started = time.perf_counter()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    config = TrialConfig.from_dict(json.loads(trial["config_json"]))
    device = resolve_device(settings.device)
    checkpoints = store.checkpoint_dir(trial["trial_id"])
    model, _ = load_model(checkpoints, config, which="best", device=str(device))
    model0, _ = load_model(checkpoints, config, which="init", device=str(device))
    runtime = TrialRuntime(device=str(device), data_dir=settings.data_dir)
    data = load_dataset(config.dataset, runtime)
    previous = existing_row(store, trial["trial_id"], config.bits)
    have = done_families(previous)
    todo = tuple(f for f in settings.families if f not in have)
    path = store.path("measures", trial["trial_id"], config.bits)
    if not todo:
        return path  # every requested family is already there
    scales = {k: previous[k] for k in SEARCHES if previous and previous.get(k) is not None}
    run_settings = dataclasses.replace(settings, families=todo)
    values = measure_networks(plain_network(model), plain_network(model0), data.train_x,
                              data.train_y, run_settings, scales)
    row = {**(previous or {}), **{k: v for k, v in values.items() if v is not None}}
    row.update({
        "trial_id": trial["trial_id"], "sweep": trial.get("sweep"), "dataset": config.dataset,
        "bits": config.bits, "families": ",".join(f for f in FAMILIES if f in have | set(todo)),
        "l2_norm_unfolded": l2_norm(model), **_settings_columns(settings),
        "seconds": (previous or {}).get("seconds", 0.0) + time.perf_counter() - started,
        "train_passes": (previous or {}).get("train_passes", 0.0) + values["train_passes"],
        "device": str(device), "host": host(), "versions_json": versions_json(),
        "measured_at": now(),
    })
    return store.write_row("measures", row, MEASURE_SCHEMA)


def run_job(results_dir: str, trial: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Measure one trial (the job of qgen_sweep.measures.select.MEASURE); never raises for a
    trial's own failure, which becomes a row under measure_failures/. Returns
    {"trial_id", "bits", "status": "measured" | "failed", "seconds", "message"}."""
    from qgen_sweep.measures.select import MEASURE
    from qgen_sweep.posthoc.job import run_guarded

    return run_guarded(MEASURE, results_dir, trial, lambda store, row: measure_trial(
        store, row, MeasureSettings.from_dict(settings)))
