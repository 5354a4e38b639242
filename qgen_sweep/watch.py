"""`qgen-sweep status --watch`: the status table redrawn every few seconds while a sweep runs.

Any number of watchers may run beside a launch (and on another machine that mounts the results
directory): they only read files the store writes atomically. On a terminal the table, the
running trials (epoch k/N, loss, accuracy) and the latest failures are redrawn in place; in a
log one summary line per interval is printed. The watch ends by itself when every planned trial
has a result, or when a launch it saw running has stopped; Ctrl-C ends it at any time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from qgen_sweep.errors import StoreError
from qgen_sweep.store import (
    ResultsStore,
    SweepStatus,
    lock_holder,
    read_attempts,
    sweep_status,
)


@dataclass
class Snapshot:
    """One look at the store: its status and the running trials' latest epochs."""

    status: SweepStatus
    running: list[dict[str, Any]]

    @property
    def finished(self) -> bool:
        return self.status.missing == 0 and self.status.totals["planned"] > 0


def running_ids(store: ResultsStore, locked_by: dict[str, Any] | None) -> list[str]:
    """Trials a running launch is working on: started (attempts log), no final file, and their
    latest attempt has no failure row yet. Empty when no launch holds the sweep lock. Cheap
    enough to call every few seconds on a 2,000-trial store: it lists folders and reads the
    plan and the unfinished trials' attempts logs, never the trial files."""
    if locked_by is None:
        return []
    try:
        planned = store.planned_bits()
    except StoreError:  # no plan yet: nothing to name
        return []
    failed_attempts: dict[str, int] = {}
    for path in store.files("failures"):  # failures/<trial_id>-<attempt>.parquet
        trial_id, _, attempt = path.stem.rpartition("-")
        if attempt.isdigit():
            failed_attempts[trial_id] = max(failed_attempts.get(trial_id, 0), int(attempt))
    folder = store.root / "checkpoints"
    started = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    return [tid for tid in started if tid in planned
            and not store.path("trials", tid, planned[tid]).exists()
            and len(read_attempts(store, tid)) > failed_attempts.get(tid, 0)]


class StatusWatch:
    """Takes snapshots of one store (the running trials' epochs cached between them)."""

    def __init__(self, store: ResultsStore) -> None:
        from qgen_sweep.backends.running import RunningTrials

        self.store = store
        self._trials = RunningTrials(store.root, poll=0.0)

    def snapshot(self) -> Snapshot:
        status = sweep_status(self.store)
        return Snapshot(status, self._trials.rows(running_ids(self.store, status.locked_by)))

    def running(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """(who holds the sweep lock, the running trials' rows), without the full status."""
        holder = lock_holder(self.store.root)
        return holder, self._trials.rows(running_ids(self.store, holder))


def summary_line(snapshot: Snapshot, elapsed: float) -> str:
    """'[0:42] 12/16 finished (10 done, 2 diverged), 2 running, 0 failed, 2 pending | running:
    Int4 sgd lr=0.05 epoch 3/15 loss 0.412' (the plain-log form of one redraw)."""
    from qgen_sweep.backends.progress import HEARTBEAT_SHOWN, _clock
    from qgen_sweep.backends.running import describe

    t = snapshot.status.totals
    collapsed = f", {t['collapsed']} collapsed" if t["collapsed"] else ""
    line = (f"[{_clock(elapsed)}] {t['done'] + t['collapsed'] + t['diverged']}/{t['planned']} "
            f"finished ({t['done']} done{collapsed}, {t['diverged']} diverged), "
            f"{t['running']} running, "
            f"{t['failed']} failed, {t['pending'] + t['interrupted']} pending")
    if snapshot.running:
        shown = "; ".join(describe(r) for r in snapshot.running[:HEARTBEAT_SHOWN])
        line += f" | running: {shown}"
    return line


def watch_status(store: ResultsStore, view: Callable[[Snapshot], Any], interval: float,
                 stream: TextIO | None = None, live: bool | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> Snapshot:
    """Redraw `view(snapshot)` (terminal) or print a summary line (log) every `interval` s until
    the sweep is finished or the launch seen running stopped. Returns the last snapshot."""
    stream = stream or sys.stdout
    live = stream.isatty() if live is None else live
    watcher, start = StatusWatch(store), clock()
    seen_running = False
    display = _LiveOrLines(stream, live)
    with display:
        while True:
            snapshot = watcher.snapshot()
            display.show(view(snapshot), summary_line(snapshot, clock() - start))
            seen_running = seen_running or snapshot.status.locked_by is not None
            launch_ended = seen_running and snapshot.status.locked_by is None
            if snapshot.finished or launch_ended:
                return snapshot
            sleep(interval)


class _LiveOrLines:
    """A rich Live region on a terminal, else one printed line per update."""

    def __init__(self, stream: TextIO, live: bool) -> None:
        self.stream, self.live = stream, live
        self._rich: Any = None

    def __enter__(self) -> _LiveOrLines:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream, highlight=False)
            self._rich = Live(console=console, auto_refresh=False, redirect_stdout=False,
                              redirect_stderr=False)
            self._rich.start()
        return self

    def show(self, renderable: Any, line: str) -> None:
        if self._rich is not None:
            self._rich.update(renderable, refresh=True)
        else:
            print(line, file=self.stream, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()
