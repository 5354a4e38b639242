"""Fault injection, for tests only: make chosen trials raise, or kill their process, at an epoch.

Set QGEN_FAULT_INJECTION to a JSON file:

    {"faults": [{"trial_id": "3f2a...", "epoch": 2, "times": 1, "action": "raise"},
                {"trial_id": "*",       "epoch": 1, "times": "always", "action": "kill"}]}

`epoch` k fires after epoch k's checkpoint is on disk (0 = at the start of every attempt, before
training; "final" = as the trained trial's final row is about to be written; "posthoc" = after a
post-hoc job (measure, robustness, landscape) of the trial wrote its result). A retry continues
after the last checkpoint, so a fault at epoch k >= 1 fires in the attempt that trains epoch k
only: use epoch 0 to make every attempt of a trial fail.
`times`: how often the fault fires in total (an integer, or "always"). `action`: "raise"
(InjectedFault, an ordinary exception: Ray retries it), "kill" (SIGKILL of the process running
the trial: the worker dies mid-training) or "pause" (sleep `seconds`, default 2, then go on: a
test can watch a trial that is mid-way however fast the machine trains). The number of firings
is kept on disk next to the JSON file (`<file>.fired/`), so retries in new processes see it. In a
fused bundle a member's fault fails the whole bundle's attempt, as a real crash would. Never set
this in real runs.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from qgen_sweep.errors import UsageError

ENV_VAR = "QGEN_FAULT_INJECTION"
ACTIONS = ("raise", "kill", "pause")
FINAL_ROW = "final"  # the `epoch` of a fault that fires as the final row is written
POSTHOC = "posthoc"  # the `epoch` of a fault that fires after a post-hoc job wrote its result


class InjectedFault(RuntimeError):
    """The exception a "raise" fault throws inside a trial."""


@dataclass(frozen=True)
class Fault:
    trial_id: str  # "*" = every trial
    epoch: int | str  # an epoch, or FINAL_ROW
    times: int | None  # None = always
    action: str
    seconds: float = 2.0  # how long a "pause" sleeps


class FaultPlan:
    """The faults of one JSON file, with their firing counts on disk."""

    def __init__(self, path: Path, faults: list[Fault]) -> None:
        self.path = path
        self.faults = faults

    @classmethod
    def load(cls, path: str | None) -> FaultPlan | None:
        """Read the fault file (None when no file is configured)."""
        path = path or os.environ.get(ENV_VAR)
        if not path:
            return None
        try:
            data = json.loads(Path(path).read_text())
            return cls(Path(path), [_parse_fault(item) for item in data["faults"]])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UsageError(f"{ENV_VAR}={path}: not a valid fault file ({error}); see "
                             f"qgen_sweep/backends/faults.py for the format") from None

    def check(self, trial_id: str, epoch: int | str) -> None:
        """Fire the first matching fault that has firings left."""
        for index, fault in enumerate(self.faults):
            if fault.epoch != epoch or fault.trial_id not in ("*", trial_id):
                continue
            if fault.times is not None and self._fired(index, trial_id) >= fault.times:
                continue
            self._count(index, trial_id)
            if fault.action == "pause":
                time.sleep(fault.seconds)
                return
            if fault.action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise InjectedFault(f"injected fault #{index} in trial {trial_id} at epoch {epoch}")

    def _marker_dir(self, index: int, trial_id: str) -> Path:
        return self.path.with_name(f"{self.path.name}.fired") / f"{index}-{trial_id}"

    def _fired(self, index: int, trial_id: str) -> int:
        folder = self._marker_dir(index, trial_id)
        return len(list(folder.iterdir())) if folder.is_dir() else 0

    def _count(self, index: int, trial_id: str) -> None:
        # One marker file per firing (created exclusively): counting needs no lock.
        folder = self._marker_dir(index, trial_id)
        folder.mkdir(parents=True, exist_ok=True)
        n = self._fired(index, trial_id)
        while True:
            try:
                (folder / str(n)).open("x").close()
                return
            except FileExistsError:
                n += 1


def fired_count(path: Path, index: int, trial_id: str) -> int:
    """How many times fault `index` fired for `trial_id` (for tests)."""
    return FaultPlan(Path(path), [])._fired(index, trial_id)


def _parse_fault(item: dict) -> Fault:
    times = item.get("times", 1)
    action = item.get("action", "raise")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
    if times != "always" and (not isinstance(times, int) or times < 1):
        raise ValueError(f"times must be an integer >= 1 or 'always', got {times!r}")
    seconds = item.get("seconds", 2.0)
    if not isinstance(seconds, (int, float)) or not 0 <= seconds <= 3600:
        raise ValueError(f"seconds must be a number in [0, 3600], got {seconds!r}")
    epoch = item.get("epoch", 1)
    return Fault(str(item["trial_id"]), epoch if epoch in (FINAL_ROW, POSTHOC) else int(epoch),
                 None if times == "always" else times, action, float(seconds))
