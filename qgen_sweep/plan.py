"""Plan: a validated spec -> the ordered list of trials, each with its content-addressed id.

The learning rate is conditional on the optimizer: with a `[grid.lr]` table each optimizer gets its
own list, and `lr_index` is the level of the rate within that list (0, 1, 2), which is what the
analysis groups on (science.md, granulated Kendall). The order is deterministic (AXIS_ORDER, values
in the order written), so the same spec always gives the same trials, ids and positions. Points
that give the same trial (NiN's depth axis crossed with an arch whose depth is fixed) are planned
once, at their first position.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qgen_sweep.errors import SpecError, UsageError
from qgen_sweep.spec import AXIS_ORDER, SweepSpec
from qgen_sweep.trial.config import MEMBERS_FILE, TrialConfig, bundle_key, unfusable_reasons

if TYPE_CHECKING:
    from qgen_sweep.store import ResultsStore  # pyarrow: imported only where a plan is written


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


def save_plan(store: ResultsStore, spec: SweepSpec, trials: Sequence[PlannedTrial]) -> None:
    """Save plan.parquet, then the resolved spec (each atomically): sweep.toml, which binds the
    directory to this sweep, exists only once its plan is stored."""
    store.write_plan(spec.name, trials)
    store.write_spec(spec.saved_text())


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


# ---- fused bundles: which trials train together as one network -----------------------------

def fusable(config: TrialConfig) -> bool:
    """Whether the fused engine can train `config` in a bundle: its arch's registry entry, and
    none of the options only the single-trial engine implements (`unfusable_reasons`)."""
    return not unfusable_reasons(config)


def plan_bundles(
    configs: Sequence[TrialConfig], bundle_size: int, keep: Sequence[Sequence[str]] = ()
) -> list[tuple[TrialConfig, ...]]:
    """Group `configs` into bundles of at most `bundle_size` members that can train together.

    `keep`: member trial ids of interrupted bundles (`interrupted_bundles`). Each one whose
    members are all in `configs` stays one bundle, whatever `bundle_size` is now, so it continues
    from its checkpoint instead of starting again; these come first. The other configs are grouped
    by `bundle_key` (first appearance order), each group is cut into ceil(n / bundle_size) chunks
    of near-equal size (larger first), in input order. Pass only unfinished trials of fusable
    archs: the same unfinished set always gives the same bundles (and bundle ids).
    """
    if not isinstance(bundle_size, int) or isinstance(bundle_size, bool) or bundle_size < 1:
        raise UsageError(f"bundle size must be an integer >= 1, but got {bundle_size!r}")
    by_id = {c.trial_id: c for c in configs}
    bundles: list[tuple[TrialConfig, ...]] = []
    for ids in keep:
        members = tuple(by_id[i] for i in ids if i in by_id)
        if members and len(members) == len(ids) and len({bundle_key(c) for c in members}) == 1:
            bundles.append(members)
            for i in ids:
                del by_id[i]
    groups: dict[tuple, list[TrialConfig]] = {}
    for config in by_id.values():
        groups.setdefault(bundle_key(config), []).append(config)
    for members in groups.values():
        count = math.ceil(len(members) / bundle_size)
        base, extra = divmod(len(members), count)
        start = 0
        for i in range(count):
            size = base + (1 if i < extra else 0)
            bundles.append(tuple(members[start : start + size]))
            start += size
    return bundles


def interrupted_bundles(checkpoint_dir: Path) -> list[tuple[str, ...]]:
    """Member trial ids (training order) of each bundle under `checkpoint_dir` that has a
    last.pt and has not ended (no member has a result.json), sorted by bundle folder."""
    found = []
    for folder in sorted(Path(checkpoint_dir).glob("bundle-*")):
        try:
            ids = tuple(json.loads((folder / MEMBERS_FILE).read_text()))
        except (OSError, ValueError):
            continue
        if (folder / "last.pt").is_file() and ids and not any(
                (Path(checkpoint_dir) / i / "result.json").is_file() for i in ids):
            found.append(ids)
    return found
