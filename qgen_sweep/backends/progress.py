"""Live progress of a launch: done / running / failed / diverged / ETA.

On a terminal it is a rich status line that updates in place; in a batch log (stdout not a TTY)
it is plain lines, one at most every `interval` seconds plus one per finally-failed trial, so a
972-trial log stays readable. The counts include trials finished by earlier launches.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts trial events and renders them; backends call the `on_*` methods."""

    def __init__(self, planned: int, already_done: int, to_run: int, stream: TextIO | None = None,
                 interval: float = 10.0, live: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stdout
        self._now = clock  # injectable, so the tests need no sleeps
        self.planned, self.already_done, self.to_run = planned, already_done, to_run
        self.interval = interval
        self.live = self.stream.isatty() if live is None else live
        self.running: set[str] = set()
        self.done = self.diverged = self.pruned = self.failed = self.retries = 0
        self.start = self._now()
        self._last_line = 0.0
        self._first_finish: float | None = None
        self._first_count = 0
        self._rich = None

    # ---- events --------------------------------------------------------------------------------
    def on_start(self, trial_id: str) -> None:
        self.running.add(trial_id)
        self._render()

    def on_complete(self, trial_id: str, status: str, count: int = 1) -> None:
        """`status`: done, diverged, or pruned (stopped early by a scheduler such as ASHA).
        `count` > 1: a fused bundle of that many trials finished."""
        self._record(trial_id, {status: count})

    def on_result(self, trial_id: str, summary: dict) -> None:
        """A task's last result (`runner.run_one`'s summary): one trial, or a fused bundle whose
        `statuses` list its members' outcomes. A result without a status is a per-epoch report
        that a scheduler (ASHA) stopped the trial at: pruned."""
        if "status" not in summary:
            self._record(trial_id, {"pruned": 1})
            return
        statuses = list(summary.get("statuses") or [])
        counts = {status: statuses.count(status) for status in sorted(set(statuses))}
        rest = int(summary.get("members", 1)) - len(statuses)
        if rest > 0:  # a single trial, or members that had results already
            counts[summary["status"]] = counts.get(summary["status"], 0) + rest
        self._record(trial_id, counts)

    def _record(self, trial_id: str, counts: dict[str, int]) -> None:
        self.running.discard(trial_id)
        for status, count in counts.items():
            if status == "diverged":
                self.diverged += count
            elif status == "pruned":
                self.pruned += count
            else:
                self.done += count
        self._finished()
        self._render()

    def on_retry(self, trial_id: str, reason: str) -> None:
        self.running.discard(trial_id)
        self.retries += 1
        self._render()

    def on_fail(self, trial_id: str, reason: str) -> None:
        self.running.discard(trial_id)
        self.failed += 1
        self._finished()
        self.note(f"trial {trial_id} failed: {reason}")
        self._render(force=True)

    def note(self, text: str) -> None:
        """A one-off line (warnings, failures) that stays in the log."""
        if self._rich is not None:
            self._rich.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.stream, flush=True)

    # ---- rendering -----------------------------------------------------------------------------
    def eta(self) -> str:
        """Time left at the throughput since the first finished trial (which also paid for
        Ray's start and the workers' imports, so it would inflate the estimate)."""
        finished = self._finished_count()
        left = self.to_run - finished
        if left <= 0:
            return "0:00"
        since_first = finished - self._first_count  # a fused bundle's members finish at once
        if self._first_finish is None or since_first < 1:
            return "--"
        rate = since_first / max(self._now() - self._first_finish, 1e-9)
        return _clock(left / rate)

    def _finished_count(self) -> int:
        return self.done + self.diverged + self.pruned + self.failed

    def _finished(self) -> None:
        """Called after the counts changed: remember when (and at what count) the first
        task finished."""
        if self._first_finish is None:
            self._first_finish = self._now()
            self._first_count = self._finished_count()

    def line(self) -> str:
        """The status line: counts over the whole sweep, ETA from this run's throughput."""
        elapsed = self._now() - self.start
        eta = self.eta()
        total_done = self.already_done + self.done
        pruned = f", {self.pruned} pruned" if self.pruned else ""
        return (f"[{_clock(elapsed)}] {total_done + self.diverged + self.pruned}/{self.planned} "
                f"finished ({self.done} done, {self.diverged} diverged{pruned} this run), "
                f"{len(self.running)} running, {self.failed} failed, {self.retries} retried, "
                f"ETA {eta}")

    def __enter__(self) -> Progress:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._rich = Live(self.line(), console=Console(file=self.stream),
                              refresh_per_second=4, transient=False)
            self._rich.__enter__()
        else:
            print(self.line(), file=self.stream, flush=True)
            self._last_line = self._now()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.update(self.line())
            self._rich.__exit__(*exc)
            self._rich = None
        else:
            print(self.line(), file=self.stream, flush=True)

    def _render(self, force: bool = False) -> None:
        if self._rich is not None:
            self._rich.update(self.line())
            return
        now = self._now()
        if force or now - self._last_line >= self.interval:
            print(self.line(), file=self.stream, flush=True)
            self._last_line = now
