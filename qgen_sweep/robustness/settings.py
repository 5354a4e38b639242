"""What a robustness job needs besides the trial (torch-free, JSON-able for Ray)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from qgen_sweep.errors import UsageError
from qgen_sweep.robustness.params import COMMON, SEVERITIES

SOURCES = ("generated", "released")


@dataclass(frozen=True)
class RobustnessSettings:
    """Source, corrupted sets and where to run. seed: the generated corruptions' random draws
    (the same for every trial, so twins see the same images)."""

    source: str = "generated"
    corruptions: tuple[str, ...] = COMMON
    severities: tuple[int, ...] = SEVERITIES
    seed: int = 0
    eval_batch_size: int = 1024  # images per forward pass
    device: str = "auto"
    data_dir: str | None = None
    corrupted_dir: str | None = None  # released sets: CIFAR-C arrays or ImageNet-C folders
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise UsageError(f"--source must be one of {', '.join(SOURCES)}, but got "
                             f"{self.source!r}")
        if self.eval_batch_size < 1:
            raise UsageError(f"--eval-batch-size must be >= 1, but got {self.eval_batch_size}")
        if not self.corruptions:
            raise UsageError("--corruptions selected nothing; name at least one corruption")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["corruptions"], data["severities"] = list(self.corruptions), list(self.severities)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RobustnessSettings:
        values = dict(data)
        values["corruptions"] = tuple(values["corruptions"])
        values["severities"] = tuple(values["severities"])
        return cls(**values)
