"""Optuna studies over the QGen space, kept consistent with the results store.

One study per precision (`per_precision = true`, bits fixed per study) or one study over all of
them, persisted in `<results>/optuna/journal.log` (Optuna's journal file storage: append-only,
safe with several writers, unlike SQLite). The store stays the ledger of results; the journal is
the ledger of what the sampler asked and was told. The rules that keep both consistent:

- A suggestion is a grid point with the grid's content-addressed trial id. If that id already has
  a final row, the study is told the stored value at once (no training); if it is training right
  now, the new suggestion waits for that run and is told the same value; if the pruner stopped
  it in an earlier trial of the study, it is told PRUNED at once: the pruner's verdict on a
  configuration is final, so a repeated suggestion neither trains it again nor continues it past
  the rung it was stopped at.
- A study's budget counts finished trials: told a value (COMPLETE), stopped early by the pruner
  (PRUNED), or diverged (FAIL with outcome "diverged": a result, not a failure). Trials that
  failed for good do not count, so the search replaces them.
- After a killed driver, `reconcile` finds the trials left RUNNING: one whose final row exists is
  told its value; the others are marked FAIL ("interrupted") and their parameters enqueued, so the
  next suggestion continues that trial from its checkpoint.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from qgen_sweep.errors import UsageError
from qgen_sweep.plan import PlannedTrial, axis_names, save_plan
from qgen_sweep.spec import SweepSpec
from qgen_sweep.spec_optuna import OptunaSettings
from qgen_sweep.store import ResultsStore
from qgen_sweep.trial.config import TrialConfig

ATTR_TRIAL_ID = "trial_id"  # user attr: the qgen trial id of an Optuna trial
ATTR_OUTCOME = "outcome"  # user attr: done | diverged | failed | pruned | interrupted
ATTR_REUSED = "reused"  # user attr: True when the value came from an earlier run's final row

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# ---- storage and studies -------------------------------------------------------------------------
def journal_path(root: Path | str) -> Path:
    """Where a results directory keeps its Optuna journal."""
    return ResultsStore(root).journal_path


def _repair_torn_tail(path: Path) -> None:
    """Cut a last line left half-written by a killed process (Optuna rejects lines after it)."""
    data = path.read_bytes() if path.is_file() else b""
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)


def open_storage(root: Path | str, repair: bool = False) -> optuna.storages.JournalStorage:
    """The journal file storage of a results directory (created when missing).

    `repair` cuts a torn last line; only the driver holding the sweep lock may ask for it (a
    reader must never truncate a file someone may be appending to).
    """
    from optuna.storages.journal import JournalFileBackend

    path = journal_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    if repair:
        _repair_torn_tail(path)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


@dataclass(frozen=True)
class StudyKey:
    """One study of a sweep: its name in the journal and its fixed precision (None = searched)."""

    name: str
    bits: int | None


def settings_of(spec: SweepSpec) -> OptunaSettings:
    """The spec's Optuna settings; a usage error for a grid sweep."""
    if spec.optuna is None:
        raise UsageError(f"{spec.name} is a {spec.search} sweep, not an adaptive one; set "
                         f"search = \"optuna\" to search it with Optuna")
    return spec.optuna


def bits_values(spec: SweepSpec) -> tuple[int, ...]:
    """The precisions a sweep covers (an axis, or the one fixed value)."""
    return tuple(spec.axes["bits"]) if "bits" in spec.axes else (int(spec.fixed["bits"]),)


def study_keys(spec: SweepSpec) -> list[StudyKey]:
    """The studies of a sweep, in precision order."""
    if settings_of(spec).per_precision:
        return [StudyKey(f"{spec.name}/bits={b}", b) for b in bits_values(spec)]
    return [StudyKey(spec.name, None)]


def make_sampler(settings: OptunaSettings, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler. `offset` (trials already in the study) shifts the seed, so a resumed
    search does not replay the random start-up suggestions it already made.

    Every study of a sweep gets the same seed on purpose: their random start-up suggestions are
    then the same configurations at each precision, i.e. Int-b / FP32 twins that the report's
    paired statistics can compare.
    """
    seed = settings.seed + offset
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # multivariate + group: TPE models the conditional learning rate jointly with the optimizer
    # it belongs to (Optuna docs, TPESampler `group`); constant_liar keeps parallel workers apart.
    with warnings.catch_warnings():  # `group` and `multivariate` are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.startup_trials,
                                          multivariate=True, group=True, constant_liar=True)


def load_study(spec: SweepSpec, key: StudyKey, storage) -> optuna.Study:
    """Create or load one study, with a sampler seeded past its existing trials."""
    settings = settings_of(spec)
    study = optuna.create_study(storage=storage, study_name=key.name, load_if_exists=True,
                                direction=settings.direction,
                                sampler=optuna.samplers.RandomSampler(seed=settings.seed))
    study.sampler = make_sampler(settings, offset=len(study.get_trials(deepcopy=False)))
    # Read back by `status` and `report`, which see only the journal.
    for name, value in (("sweep", spec.name), ("bits", key.bits), ("n_trials", settings.n_trials),
                        ("objective", settings.objective)):
        if study.user_attrs.get(name) != value:
            study.set_user_attr(name, value)
    return study


# ---- the search space ----------------------------------------------------------------------------
def lr_param(optimizer: str) -> str:
    """Name of the conditional learning-rate parameter of one optimizer."""
    return f"lr_{optimizer}"


def suggest(trial: Any, spec: SweepSpec, bits: int | None) -> dict[str, Any]:
    """Define-by-run space: every [grid] axis as a categorical choice, lr per optimizer.

    `trial` is an optuna Trial (or Ray's wrapper of one); the suggested values are returned.
    """
    params: dict[str, Any] = {}
    for name in axis_names(spec):
        if name == "bits" and bits is not None:
            continue
        if name == "lr" and spec.lr_table:
            optimizer = params.get("optimizer", spec.fixed.get("optimizer"))
            key = lr_param(optimizer)
            params[key] = trial.suggest_categorical(key, list(spec.lr_table[optimizer]))
        else:
            params[name] = trial.suggest_categorical(name, list(spec.axes[name]))
    return params


def space_size(spec: SweepSpec, bits: int | None) -> int:
    """Number of distinct configurations one study can suggest."""
    size = 1
    for name, values in spec.axes.items():
        if not (name == "bits" and bits is not None):
            size *= len(values)
    if spec.lr_table:
        optimizers = spec.axes.get("optimizer") or (spec.fixed["optimizer"],)
        size = size // max(len(optimizers), 1) * sum(len(spec.lr_table[o]) for o in optimizers)
    return size


def planned_from_params(spec: SweepSpec, bits: int | None, params: dict[str, Any],
                        position: int = 0) -> PlannedTrial:
    """The trial a suggestion stands for (same config, id and lr level as the grid's)."""
    values = {**spec.fixed, **{k: v for k, v in params.items() if not k.startswith("lr_")}}
    if bits is not None:
        values["bits"] = bits
    lr_index = 0
    if spec.lr_table:
        optimizer = values["optimizer"]
        values["lr"] = params[lr_param(optimizer)]
        lr_index = list(spec.lr_table[optimizer]).index(values["lr"])
    elif "lr" in spec.axes:
        lr_index = list(spec.axes["lr"]).index(values["lr"])
    return PlannedTrial(position=position, config=TrialConfig.from_dict(values),
                        lr_index=lr_index)


# ---- outcomes from the store ---------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What a study is told about one finished (or stopped, or failed) trial."""

    state: TrialState
    value: float | None
    label: str  # done | diverged | failed | pruned | interrupted


def stored_outcome(store: ResultsStore, trial_id: str, bits: int,
                   objective: str) -> Outcome | None:
    """The outcome recorded by a trial's final row (None when it has no readable one)."""
    row = store.final_row(trial_id, bits, columns=[objective, "status"])
    if row is None:  # missing or torn: resume reruns the trial
        return None
    value = row[objective]
    if row["status"] == "diverged" or value is None or not math.isfinite(value):
        return Outcome(TrialState.FAIL, None, "diverged")
    return Outcome(TrialState.COMPLETE, float(value), "done")


def tell(study: optuna.Study, trial: Trial, outcome: Outcome, reused: bool = False) -> None:
    """Finish an Optuna trial with an outcome, recording the label (and reuse) on it."""
    trial.set_user_attr(ATTR_OUTCOME, outcome.label)
    if reused:
        trial.set_user_attr(ATTR_REUSED, True)
    values = outcome.value if outcome.state == TrialState.COMPLETE else None
    study.tell(trial, values, state=outcome.state, skip_if_finished=True)


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial counts toward its study's budget (a finished trial, not a failure)."""
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get(ATTR_OUTCOME) == "diverged"


def finished_count(study: optuna.Study) -> int:
    """Finished trials of a study (its progress toward n_trials)."""
    return sum(counts(t) for t in study.get_trials(deepcopy=False))


def _trial_id_of(spec: SweepSpec, key: StudyKey, trial: FrozenTrial) -> str | None:
    tid = trial.user_attrs.get(ATTR_TRIAL_ID)
    if tid is None:
        params = trial.system_attrs.get("fixed_params", trial.params)
        try:
            tid = planned_from_params(spec, key.bits, params).trial_id
        except (KeyError, ValueError, UsageError):
            return None  # asked, but killed before its parameters were all suggested
    return tid


def _bits_of(spec: SweepSpec, key: StudyKey, trial: FrozenTrial) -> int:
    return key.bits if key.bits is not None else int(trial.params.get("bits", bits_values(spec)[0]))


# ---- one study during a launch -------------------------------------------------------------------
class AdaptiveStudy:
    """A study plus the in-flight bookkeeping of one launch (used by the Ray and local backends).

    `admit` turns a fresh suggestion into a trial to run, or settles it from the store;
    `finish` tells the study (and any suggestion waiting on the same configuration) the outcome.
    """

    def __init__(self, spec: SweepSpec, key: StudyKey, storage, store: ResultsStore,
                 ledger: PlanLedger) -> None:
        self.spec, self.key, self.store, self.ledger = spec, key, store, ledger
        self.settings = settings_of(spec)
        self.study = load_study(spec, key, storage)
        self.running: dict[str, Trial] = {}  # qgen trial id -> the Optuna trial that runs it
        self.waiting: dict[str, list[Trial]] = {}  # duplicates told when that run finishes
        self.reused = self.failed = 0

    @property
    def objective(self) -> str:
        return self.settings.objective

    def space(self, trial: Any) -> dict[str, Any]:
        """The define-by-run function (OptunaSearch calls it with its own trial wrapper)."""
        return suggest(trial, self.spec, self.key.bits)

    def in_flight(self) -> int:
        return len(self.running) + sum(len(v) for v in self.waiting.values())

    def remaining(self) -> int:
        """Suggestions still to make: the budget minus finished and in-flight trials."""
        return self.settings.n_trials - finished_count(self.study) - self.in_flight()

    def admit(self, trial: Trial, params: dict[str, Any]) -> PlannedTrial | None:
        """The trial to run for a suggestion, or None when it was settled without training."""
        planned = planned_from_params(self.spec, self.key.bits, params)
        tid = planned.trial_id
        trial.set_user_attr(ATTR_TRIAL_ID, tid)
        outcome = stored_outcome(self.store, tid, planned.config.bits, self.objective)
        if outcome is not None:
            tell(self.study, trial, outcome, reused=True)
            self.reused += 1
            self.ledger.add(planned)
            return None
        if tid not in self.running and self._pruned_before(tid):
            tell(self.study, trial, Outcome(TrialState.PRUNED, None, "pruned"), reused=True)
            self.reused += 1
            return None
        if tid in self.running:
            self.waiting.setdefault(tid, []).append(trial)
            return None
        self.running[tid] = trial
        self.ledger.add(planned)
        return planned

    def _pruned_before(self, trial_id: str) -> bool:
        """Whether the pruner stopped this configuration in an earlier trial of the study."""
        return any(t.user_attrs.get(ATTR_TRIAL_ID) == trial_id
                   for t in self.study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))

    def finish(self, trial_id: str, bits: int, error: bool) -> Outcome:
        """Tell the study how a run ended: its final row, a failure, or a stop by the pruner."""
        outcome = stored_outcome(self.store, trial_id, bits, self.objective)
        if outcome is None:
            label = "failed" if error else "pruned"
            outcome = Outcome(TrialState.FAIL if error else TrialState.PRUNED, None, label)
        if outcome.label == "failed":
            self.failed += 1
        if outcome.label == "pruned":
            self.ledger.discard(trial_id)
        for trial in [self.running.pop(trial_id), *self.waiting.pop(trial_id, [])]:
            tell(self.study, trial, outcome)
        return outcome

    def give_up(self) -> bool:
        """True when so many runs failed for good that searching on would only fail more."""
        return self.failed >= self.settings.n_trials


def reconcile(spec: SweepSpec, key: StudyKey, study: optuna.Study, store: ResultsStore,
              storage: optuna.storages.BaseStorage) -> dict[str, int]:
    """Settle trials a killed driver left RUNNING (see the module docstring); `storage` is the
    study's. Returns counts."""
    objective = settings_of(spec).objective
    waiting = {_trial_id_of(spec, key, t) for t in study.get_trials(
        deepcopy=False, states=(TrialState.WAITING,))}
    summary = {"told": 0, "requeued": 0}
    study_id = storage.get_study_id_from_name(study.study_name)
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # the running trial again, through the storage's public lookup by trial number
        trial = Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id,
                                                                              frozen.number))
        tid = _trial_id_of(spec, key, frozen)
        outcome = None if tid is None else stored_outcome(store, tid, _bits_of(spec, key, frozen),
                                                          objective)
        if outcome is not None:
            tell(study, trial, outcome)
            summary["told"] += 1
            continue
        tell(study, trial, Outcome(TrialState.FAIL, None, "interrupted"))
        if tid is not None and tid not in waiting:
            study.enqueue_trial(dict(frozen.params), user_attrs={ATTR_TRIAL_ID: tid})
            waiting.add(tid)
            summary["requeued"] += 1
    return summary


# ---- the plan of an adaptive sweep ---------------------------------------------------------------
class PlanLedger:
    """plan.parquet of an adaptive sweep: the configurations suggested so far, in first-seen order.

    Trials stopped by the pruner leave it (they will never have a final row), so `status` and
    `query` count exactly the trials that are meant to finish.
    """

    def __init__(self, spec: SweepSpec, store: ResultsStore) -> None:
        self.spec, self.store = spec, store
        self.trials: dict[str, PlannedTrial] = {}

    def add(self, planned: PlannedTrial, write: bool = True) -> None:
        if planned.trial_id in self.trials:
            return
        self.trials[planned.trial_id] = PlannedTrial(len(self.trials), planned.config,
                                                     planned.lr_index)
        if write:
            self.write()

    def discard(self, trial_id: str) -> None:
        if self.trials.pop(trial_id, None) is not None:
            self.write()

    def write(self) -> None:
        save_plan(self.store, self.spec, list(self.trials.values()))

    def rebuild(self, keys: list[StudyKey], studies: dict[str, optuna.Study]) -> None:
        """Every configuration the journal holds, except ones that were only ever pruned."""
        entries: list[tuple[int, str, FrozenTrial, StudyKey]] = []
        for key in keys:
            for trial in studies[key.name].get_trials(deepcopy=False):
                if trial.state == TrialState.PRUNED:
                    continue
                if trial.state == TrialState.FAIL and \
                        trial.user_attrs.get(ATTR_OUTCOME) == "interrupted":
                    continue  # enqueued again as a WAITING trial when it has no result
                entries.append((trial.number, key.name, trial, key))
        for _, _, trial, key in sorted(entries, key=lambda e: (e[0], e[1])):
            params = trial.system_attrs.get("fixed_params", trial.params)
            try:
                self.add(planned_from_params(self.spec, key.bits, params), write=False)
            except (KeyError, ValueError, UsageError):
                continue
        self.write()
