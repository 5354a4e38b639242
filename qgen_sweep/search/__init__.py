"""How a sweep chooses its trials: a search strategy behind the one launcher.

Every sweep is launched, resumed, validated, dry-run and shown by the same code
(qgen_sweep/launcher.py, qgen_sweep/commands/sweep.py); what differs between `search = "grid"`
(every planned trial) and `search = "optuna"` (trials a sampler suggests) is a `Search`:

    search = strategy_for(spec)                # the registered strategy of spec.search
    search.describe(trials)                    # validate's lines
    work = search.open(store, trials, progress, bundle_size)   # under the sweep lock
    run_tasks(backend, work.source, ctx, settings, progress)   # any backend
    search.incomplete(store)                   # None, or why the sweep is not complete

A strategy hands the backend a `qgen_sweep.backends.TaskSource`: the grid a fixed list, an
adaptive search its suggestions as it goes. A new strategy is one `STRATEGIES` entry and a class
with these methods; the launcher, the commands and the backends do not change.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from qgen_sweep.backends import TaskSource
    from qgen_sweep.backends.progress import Progress
    from qgen_sweep.plan import PlannedTrial
    from qgen_sweep.spec import SweepSpec
    from qgen_sweep.store import ResultsStore

# spec.search -> "module:Class"; imported only when used (optuna is not needed to plan a grid).
STRATEGIES = {
    "grid": "qgen_sweep.search.grid:GridSearch",
    "optuna": "qgen_sweep.adaptive.strategy:OptunaSearch",
}


@dataclass
class Work:
    """What is left of a sweep when a launch opens it: the tasks to run and the counts the
    progress starts from."""

    source: TaskSource
    done: int  # trials that already count as finished
    to_run: int  # trials still to finish
    finished_note: str  # what the launch says when nothing is left to run


class Search(Protocol):
    """One way of choosing a sweep's trials. `trials` is always the sweep's full plan (every
    configuration it may run, validated by the launcher before anything starts)."""

    spec: SweepSpec
    reruns_incomplete: bool  # whether launch / resume run a trial again whose files were lost

    def total(self, trials: list[PlannedTrial]) -> int:
        """The trials the sweep is meant to finish (`list`, the progress line)."""

    def describe(self, trials: list[PlannedTrial]) -> list[str]:
        """What `validate` prints about the sweep."""

    def dry_run(self, trials: list[PlannedTrial], store: ResultsStore) -> list[str]:
        """What `launch --dry-run` prints: how far the sweep is and what would run."""

    def pending(self, trials: list[PlannedTrial]) -> dict[Any, int]:
        """Trials per precision before the first launch (`status` shows them pending)."""

    def open(self, store: ResultsStore, trials: list[PlannedTrial], progress: Progress,
             bundle_size: int | None) -> Work:
        """Under the sweep lock: record the plan, settle what an earlier launch left, and
        return what is left to run."""

    def incomplete(self, store: ResultsStore) -> str | None:
        """After a launch: why the sweep is not complete (the count and what to do), or None."""

    def status_lines(self, root: Path) -> list[str]:
        """Lines `status` adds for this kind of search (none for a grid)."""

    def status_data(self, root: Path) -> dict[str, Any]:
        """What `status --format json` adds for this kind of search ({} for a grid)."""


def strategy_for(spec: SweepSpec) -> Search:
    """The strategy that runs `spec` (spec.search is validated, so it is registered)."""
    module, _, name = STRATEGIES[spec.search].partition(":")
    return getattr(importlib.import_module(module), name)(spec)
