"""The grid strategy (`search = "grid"`): every planned trial, each run until it has a result.

The store is the ledger: the pending trials are the planned ids without a complete result (a
readable final row and epoch rows), so a finished trial is never rerun and a launch on a partly
finished sweep simply continues. With the fused engine (`resources.engine = "fused"` or
`--bundle-size K`) the unfinished trials of a fusable architecture run as bundles of up to K
members; the others stay one task each, with a one-line notice.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qgen_sweep.backends import FixedTasks, bundle_task_of, task_of
from qgen_sweep.plan import (
    PlannedTrial,
    axis_counts,
    count_by,
    fusable,
    interrupted_bundles,
    plan_bundles,
    save_plan,
)
from qgen_sweep.search import Work
from qgen_sweep.spec import SweepSpec

if TYPE_CHECKING:
    from qgen_sweep.backends.progress import Progress
    from qgen_sweep.store import ResultsStore

SHOWN = 5  # trials a dry run lists by name


class GridSearch:
    """Every trial of the plan (see the module docstring)."""

    reruns_incomplete = True

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec

    def total(self, trials: list[PlannedTrial]) -> int:
        return len(trials)

    def describe(self, trials: list[PlannedTrial]) -> list[str]:
        spec, res = self.spec, self.spec.resources
        lines = [f"{spec.name} ({spec.source}): {len(trials)} trials, search = {spec.search}"]
        lines += [f"  {name:<14} {described}" for name, described in axis_counts(spec)]
        lines += [f"  trials per precision (bits): {_per_bits(trials)}",
                  f"  resources per trial: cpu {res.cpu:g}, gpu {res.gpu:g}; max concurrent "
                  f"{res.max_concurrent or 'unlimited'}; max failures {res.max_failures}"]
        return lines

    def dry_run(self, trials: list[PlannedTrial], store: ResultsStore) -> list[str]:
        done = store.complete_ids() & {t.trial_id for t in trials}
        todo = [t for t in trials if t.trial_id not in done]
        lines = [f"{self.spec.name}: {len(trials)} trials planned ({_per_bits(trials)} by bits); "
                 f"{len(done)} already done, {len(todo)} would run"]
        for trial in todo[:SHOWN]:
            c = trial.config
            lines.append(f"  {trial.trial_id}  {c.dataset} bits={c.bits} {c.optimizer} "
                         f"lr={c.lr:g} wd={c.weight_decay:g} depth={c.depth} width={c.width} "
                         f"epochs={c.epochs}")
        if len(todo) > SHOWN:
            lines.append(f"  ... {len(todo) - SHOWN} more")
        if not todo:
            lines.append(f"all {len(trials)} trials already have results in {store.root}: "
                         "nothing would run")
        return lines

    def pending(self, trials: list[PlannedTrial]) -> dict[Any, int]:
        return count_by(trials, "bits")

    def open(self, store: ResultsStore, trials: list[PlannedTrial], progress: Progress,
             bundle_size: int | None) -> Work:
        save_plan(store, self.spec, trials)
        done = store.complete_ids()  # a finished trial that lost its epochs file runs again
        pending = [t for t in trials if t.trial_id not in done]
        tasks = self._tasks(pending, bundle_size, progress, store.root / "checkpoints")
        return Work(FixedTasks(tasks), done=len(trials) - len(pending), to_run=len(pending),
                    finished_note=f"all {len(trials)} trials of {self.spec.name} already have "
                                  "results")

    def _tasks(self, pending: list[PlannedTrial], bundle_size: int | None, progress: Progress,
               checkpoints: Path) -> list[dict]:
        """One task per trial, or (engine "fused") one per bundle of unfinished trials of a
        fusable arch; the others stay one task each, with a one-line notice."""
        if self.spec.resources.engine != "fused" and bundle_size is None:
            return [task_of(t.trial_id, t.config, t.lr_index) for t in pending]
        size = bundle_size or self.spec.resources.bundle_size
        singles = [task_of(t.trial_id, t.config, t.lr_index) for t in pending
                   if not fusable(t.config)]
        if singles:
            archs = sorted({t.config.arch for t in pending if not fusable(t.config)})
            progress.note(f"fused engine: arch {', '.join(archs)} trains unfused, one trial per "
                          f"task ({len(singles)} trials); bundles are for nin")
        fused = [t for t in pending if fusable(t.config)]
        if not fused:
            return singles
        lr_index = {t.trial_id: t.lr_index for t in fused}
        keep = interrupted_bundles(checkpoints)
        bundles = plan_bundles([t.config for t in fused], size, keep)
        progress.note(f"fused engine: {len(fused)} trials in {len(bundles)} bundles of up to "
                      f"{size}")
        kept = set(keep)
        resumed = sum(1 for b in bundles if tuple(c.trial_id for c in b) in kept)
        if resumed:
            progress.note(f"fused engine: {resumed} interrupted bundle(s) continue from their "
                          "checkpoints with their members as they were")
        return [bundle_task_of([(c.trial_id, c, lr_index[c.trial_id]) for c in b])
                for b in bundles] + singles

    def incomplete(self, store: ResultsStore) -> str | None:
        from qgen_sweep.store import sweep_status

        status = sweep_status(store)
        if not status.missing:
            return None
        return (f"{status.missing} of {status.totals['planned']} trials have no result (failed "
                f"or not run); see `qgen-sweep status`, fix the cause, then `qgen-sweep resume`")

    def status_lines(self, root: Path) -> list[str]:
        return []

    def status_data(self, root: Path) -> dict[str, Any]:
        return {}


def _per_bits(trials: list[PlannedTrial]) -> str:
    return ", ".join(f"{b}: {n}" for b, n in count_by(trials, "bits").items())
