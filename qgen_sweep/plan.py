"""Plan: a validated spec -> the ordered list of trials, each with its content-addressed id.

The learning rate is conditional on the optimizer: with a `[grid.lr]` table each optimizer gets its
own list, and `lr_index` is the level of the rate within that list (0, 1, 2), which is what the
analysis groups on (science.md, granulated Kendall). The order is deterministic (AXIS_ORDER, values
in the order written), so the same spec always gives the same trials, ids and positions. Points
that give the same trial (NiN's depth axis crossed with an arch whose depth is fixed) are planned
once, at their first position.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from qgen_sweep.errors import SpecError, UsageError
from qgen_sweep.spec import AXIS_ORDER, SweepSpec
from qgen_sweep.trial.config import TrialConfig


@dataclass(frozen=True)
class PlannedTrial:
    """One trial of a sweep: its config, its place in the plan and its lr level."""

    position: int
    config: TrialConfig
    lr_index: int

    @property
    def trial_id(self) -> str:
        return self.config.trial_id

    def plan_row(self, sweep: str) -> dict[str, Any]:
        """The row of plan.parquet (store.PLAN_SCHEMA)."""
        from qgen_sweep.store import plan_row  # pyarrow: only when a plan is written

        return plan_row(sweep, self.position, self.config, self.lr_index)


def axis_names(spec: SweepSpec) -> list[str]:
    """The swept fields of a spec, in plan order."""
    return [n for n in AXIS_ORDER if n in spec.axes or (n == "lr" and spec.lr_table)]


def _points(spec: SweepSpec) -> Iterator[tuple[dict[str, Any], int]]:
    """Yield (axis values, lr_index) for every grid point, depth-first in AXIS_ORDER."""
    names = axis_names(spec)

    def values_of(name: str, current: dict[str, Any]) -> tuple:
        if name == "lr" and spec.lr_table:
            optimizer = current.get("optimizer", spec.fixed.get("optimizer"))
            return spec.lr_table[optimizer]
        return spec.axes[name]

    def walk(i: int, current: dict[str, Any], lr_index: int):
        if i == len(names):
            yield current, lr_index
            return
        name = names[i]
        for level, value in enumerate(values_of(name, current)):
            yield from walk(i + 1, {**current, name: value}, level if name == "lr" else lr_index)

    yield from walk(0, {}, 0)


def plan(spec: SweepSpec) -> list[PlannedTrial]:
    """Expand a spec into its trials; every config is validated before anything runs."""
    trials: list[PlannedTrial] = []
    seen: set[str] = set()
    problems: dict[str, str] = {}  # message -> line naming the first trial that has it
    for index, (point, lr_index) in enumerate(_points(spec)):
        values = {**spec.fixed, **point}
        try:
            config = TrialConfig.from_dict(values)
        except UsageError as error:
            line = f"{spec.source}: trial {index} ({_describe(point)}): {error}"
            problems.setdefault(str(error), line)
            continue
        if config.trial_id in seen:  # e.g. a depth axis over an arch with a fixed depth
            continue
        seen.add(config.trial_id)
        trials.append(PlannedTrial(position=len(trials), config=config, lr_index=lr_index))
        if len(problems) >= 20:  # one bad fixed value repeats for every trial; stop early
            break
    if problems:
        raise SpecError(list(problems.values()))
    return trials


def _describe(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def axis_counts(spec: SweepSpec) -> list[tuple[str, str]]:
    """(axis, description of its values) for `validate`, in plan order."""
    out = []
    for name in axis_names(spec):
        if name == "lr" and spec.lr_table:
            parts = [f"{o}: {', '.join(f'{v:g}' for v in vs)}" for o, vs in spec.lr_table.items()]
            sizes = {len(v) for v in spec.lr_table.values()}
            size = str(sizes.pop()) if len(sizes) == 1 else "/".join(
                str(len(v)) for v in spec.lr_table.values())
            out.append((name, f"{size} per optimizer ({'; '.join(parts)})"))
        else:
            values = spec.axes[name]
            shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
            out.append((name, f"{len(values)} ({shown})"))
    return out


def count_by(trials: list[PlannedTrial], field: str) -> dict[Any, int]:
    """Number of trials per value of a config field, sorted by value."""
    counts = Counter(getattr(t.config, field) for t in trials)
    return dict(sorted(counts.items()))
