"""Granulated Kendall rank coefficient (Jiang et al. 2019, "Fantastic generalization measures").

For each hyperparameter axis i: group the models that agree on every other axis (and on the
fixed columns, e.g. the dataset), take Kendall's tau between the measure and the generalization
gap inside each group, and average over groups: psi_i. Psi is the mean of psi_i over the axes.
The learning rate enters as its level index (`lr_index`, 0/1/2): SGD and Adam use different lr
values, so grouping on the raw lr would leave no groups along the optimizer axis.

Choices where the definition is silent: tau is scipy's tau-b (ties handled); a group with fewer
than two models, or whose tau is undefined (a constant measure or gap), is skipped; an axis with
no usable group has psi = NaN and is left out of Psi.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy.stats import kendalltau

# The grid's axes (science.md "The grid"): precision is one of them.
DEFAULT_AXES = ("optimizer", "lr_index", "weight_decay", "width", "depth", "bits")


@dataclass(frozen=True)
class KendallResult:
    """psi per axis, their mean Psi, and the number of groups that entered each psi."""

    psi: dict[str, float]
    groups: dict[str, int]
    overall: float


def _finite(value: Any) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def axis_psi(
    rows: Sequence[Mapping[str, Any]],
    measure: str,
    axis: str,
    axes: Sequence[str],
    target: str = "gap",
    fixed: Sequence[str] = ("dataset",),
) -> tuple[float, int]:
    """(psi_i, groups used) for one axis."""
    others = [a for a in axes if a != axis] + [f for f in fixed if f not in axes]
    groups: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        if _finite(row.get(measure)) and _finite(row.get(target)):
            key = tuple(row.get(a) for a in others)
            groups[key].append((float(row[measure]), float(row[target])))
    taus = []
    for pairs in groups.values():
        if len(pairs) < 2:
            continue
        xs, ys = zip(*pairs, strict=True)
        tau = kendalltau(xs, ys).statistic
        if math.isfinite(tau):
            taus.append(float(tau))
    return (sum(taus) / len(taus) if taus else math.nan), len(taus)


def granulated_kendall(
    rows: Iterable[Mapping[str, Any]],
    measure: str,
    target: str = "gap",
    axes: Sequence[str] = DEFAULT_AXES,
    fixed: Sequence[str] = ("dataset",),
) -> KendallResult:
    """Granulated Kendall coefficient of `measure` against `target` over `axes`."""
    rows = list(rows)
    psi: dict[str, float] = {}
    used: dict[str, int] = {}
    for axis in axes:
        psi[axis], used[axis] = axis_psi(rows, measure, axis, axes, target, fixed)
    defined = [v for v in psi.values() if math.isfinite(v)]
    overall = sum(defined) / len(defined) if defined else math.nan
    return KendallResult(psi, used, overall)
