"""Live progress of long work: a launch's trials (`Progress`) and post-hoc jobs (`JobProgress`,
for measure and the other commands that run one job per finished trial).

On a terminal it is a rich live region redrawn 4 times a second, so its clock ticks from the
first moment ("starting Ray...") even while nothing finishes; a launch's region also holds a
table of the running trials (precision, optimizer, lr, epoch k/N, loss, accuracy) read from
their per-epoch rows. In a batch log (stream not a TTY) it is plain lines: one at most every
`interval` seconds on events, a heartbeat line whenever `interval` seconds pass without one, and
every failure at once, so a 972-trial log stays readable and still shows it is alive. The counts
include trials finished by earlier launches.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self, TextIO

from qgen_sweep.errors import UsageError

RUNNING_SHOWN = 12  # rows of the running-trials table (the rest is counted)
HEARTBEAT_SHOWN = 3  # running trials named on a heartbeat line


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Throughput:
    """ETA from the rate since the first finish: the first one also paid for Ray's start and the
    workers' imports, which would inflate the estimate. A fused bundle's members finish at one
    instant, so the first finish sets where the rate starts, it is not a rate of its own."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._now = clock
        self._first_time: float | None = None
        self._first_count = 0

    def update(self, finished: int) -> None:
        """Call after the finished count changed."""
        if self._first_time is None and finished > 0:
            self._first_time, self._first_count = self._now(), finished

    def eta(self, finished: int, total: int) -> str:
        left = total - finished
        if left <= 0:
            return "0:00"
        since_first = finished - self._first_count
        if self._first_time is None or since_first < 1:
            return "--"
        rate = since_first / max(self._now() - self._first_time, 1e-9)
        return _clock(left / rate)


class Display:
    """Where a progress renders: a rich Live region (terminal) or plain lines with a heartbeat.

    `view()` gives the live region's content (called on every redraw), `line()` the plain line.
    Plain lines go to `write` (default: print to `stream`); `first_line` = print one at start.
    Thread-safe: backends report from Tune's callback thread, the heartbeat from its own.
    """

    def __init__(self, stream: TextIO, live: bool, interval: float, view: Callable[[], Any],
                 line: Callable[[], str], clock: Callable[[], float],
                 write: Callable[[str], None] | None = None, first_line: bool = True) -> None:
        self.stream, self.live, self.interval = stream, live, interval
        self._view, self._line, self._now = view, line, clock
        self._write = write or (lambda text: print(text, file=self.stream, flush=True))
        self._first_line = first_line
        self._lock = threading.RLock()
        self._rich: Any = None
        self._last_line = float("-inf")
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def start(self) -> None:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream, highlight=False)
            self._rich = Live(console=console, get_renderable=self._view, refresh_per_second=4,
                              transient=False, redirect_stdout=False, redirect_stderr=False)
            self._rich.start()
            return
        if self._first_line:
            self.print_line()
        else:
            self._last_line = self._now()
        if self.interval > 0:
            self._beat = threading.Thread(target=self._heartbeat, name="qgen-heartbeat",
                                          daemon=True)
            self._beat.start()

    def stop(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        if self._rich is not None:
            self._rich.refresh()
            self._rich.stop()
            self._rich = None
        else:
            self.print_line()

    def note(self, text: str) -> None:
        """A line that stays in the log (warnings, failures), printed at once."""
        with self._lock:
            if self._rich is not None:
                self._rich.console.print(text, markup=False, highlight=False)
            else:
                self._write(text)
                self._last_line = self._now()  # the log just showed it is alive

    def changed(self, force: bool = False) -> None:
        """The counts changed: redraw (live), or print a line if `interval` s passed."""
        if self._rich is not None:
            self._rich.refresh()
        elif self.live:  # a live display not started yet (or stopped): nothing to redraw
            return
        elif force or self._now() - self._last_line >= self.interval:
            self.print_line()

    def print_line(self) -> None:
        with self._lock:
            self._write(self._line())
            self._last_line = self._now()

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(self.interval, 1.0)):
            if self._now() - self._last_line >= self.interval:
                self.print_line()


class _Report:
    """What both progress displays share: a phase line before the first event, one-off notes,
    and the live region (or heartbeat lines) while the `with` block runs. Subclasses set
    `_display` (a Display), `live` and `current_phase`."""

    _display: Display
    live: bool
    current_phase: str | None

    def phase(self, text: str | None) -> None:
        """What is happening before the first trial or job starts ("starting Ray...");
        cleared by the first start."""
        self.current_phase = text
        self._display.changed(force=not self.live)

    def note(self, text: str) -> None:
        """A one-off line (warnings, failures) that stays in the log."""
        self._display.note(text)

    def __enter__(self) -> Self:
        self._display.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.current_phase = None
        self._display.stop()


class Progress(_Report):
    """Counts trial events and renders them; backends call the `on_*` methods.

    Small interface for the launchers: `phase(text)` names what happens before the first trial
    starts ("starting Ray..."), `watch(store_root, tasks)` lets the display read the running
    trials' per-epoch rows; everything else is trial events.
    """

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
        self.input_error: tuple[str, str] | None = None  # (trial id, line) that stopped the run
        self.start = self._now()
        self.current_phase: str | None = None
        self._rate = Throughput(clock)
        self._trials: Any = None  # a RunningTrials once watch() is called
        self._display = Display(self.stream, self.live, interval, self._view, self.heartbeat,
                                clock)

    # ---- set-up --------------------------------------------------------------------------------
    def watch(self, store_root: Path | str, tasks: Iterable[dict[str, Any]] = ()) -> None:
        """Show the running trials' latest epochs from the store at `store_root`; `tasks` (the
        backend's task dicts) name their configurations and fused bundles' members."""
        from qgen_sweep.backends.running import RunningTrials

        if self._trials is None:
            self._trials = RunningTrials(store_root, tasks, clock=self._now)
        else:
            self._trials.add_tasks(tasks)

    # ---- events --------------------------------------------------------------------------------
    def on_start(self, trial_id: str) -> None:
        self.current_phase = None
        self.running.add(trial_id)
        self._display.changed()

    def on_complete(self, trial_id: str, status: str, count: int = 1) -> None:
        """`status`: done, diverged, or pruned (stopped early by a scheduler such as ASHA).
        `count` > 1: a fused bundle of that many trials finished."""
        self._record(trial_id, {status: count})

    def on_result(self, trial_id: str, summary: dict) -> None:
        """A task's last result (`runner.run_one`'s summary): one trial, or a fused bundle whose
        `statuses` list its members' outcomes. A result without a status is a per-epoch report
        that a scheduler (ASHA) stopped the trial at: pruned. A summary with `input_error`
        (`runner.run_or_stop`) is a failure that stops the run."""
        if "input_error" in summary:
            self.input_error = (trial_id, summary["input_error"])
            self.on_fail(trial_id, summary["input_error"])
            return
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
        self._rate.update(self._finished_count())
        self._display.changed()

    def raise_input_error(self) -> None:
        """After the backend returns: the input error that stopped the run, as one line."""
        if self.input_error is not None:
            trial_id, line = self.input_error
            raise UsageError(f"{line} (trial {trial_id}; the sweep stopped there, without "
                             f"retrying; fix it, then `qgen-sweep resume`)")

    def on_retry(self, trial_id: str, reason: str) -> None:
        self.running.discard(trial_id)
        self.retries += 1
        self.note(f"trial {trial_id} attempt failed, retrying: {reason}")
        self._display.changed()

    def on_fail(self, trial_id: str, reason: str) -> None:
        self.running.discard(trial_id)
        self.failed += 1
        self._rate.update(self._finished_count())
        self.note(f"trial {trial_id} failed: {reason}")
        self._display.changed(force=True)

    # ---- rendering -----------------------------------------------------------------------------
    def eta(self) -> str:
        """Time left at this run's throughput since the first finished trial."""
        return self._rate.eta(self._finished_count(), self.to_run)

    def _finished_count(self) -> int:
        return self.done + self.diverged + self.pruned + self.failed

    def line(self) -> str:
        """The status line: counts over the whole sweep, ETA from this run's throughput."""
        elapsed = self._now() - self.start
        total_done = self.already_done + self.done
        pruned = f", {self.pruned} pruned" if self.pruned else ""
        phase = f" {self.current_phase}" if self.current_phase else ""
        return (f"[{_clock(elapsed)}]{phase} {total_done + self.diverged + self.pruned}/"
                f"{self.planned} finished ({self.done} done, {self.diverged} diverged{pruned} "
                f"this run), {len(self.running)} running, {self.failed} failed, "
                f"{self.retries} retried, ETA {self.eta()}")

    def running_rows(self) -> list[dict[str, Any]]:
        """One row per running trial (bundle members each), from the store (see `watch`)."""
        if self._trials is None:
            return [{"trial_id": t, "precision": None} for t in sorted(self.running)]
        return self._trials.rows(self.running)

    def heartbeat(self) -> str:
        """The plain line plus what the first running trials are at."""
        if not self.running:
            return self.line()
        from qgen_sweep.backends.running import describe

        rows = self.running_rows()
        shown = "; ".join(describe(r) for r in rows[:HEARTBEAT_SHOWN])
        more = f"; +{len(rows) - HEARTBEAT_SHOWN} more" if len(rows) > HEARTBEAT_SHOWN else ""
        return f"{self.line()} | running: {shown}{more}"

    def _view(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        if not self.running:
            return Text(self.line())
        return Group(Text(self.line()), running_table(self.running_rows()))


def running_table(rows: list[dict[str, Any]]) -> Any:
    """The rich table of running trials (at most RUNNING_SHOWN rows, the rest counted)."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for name, justify in (("bits", "left"), ("optimizer", "left"), ("lr", "right"),
                          ("epoch", "right"), ("train loss", "right"), ("test acc", "right"),
                          ("trial", "left")):
        table.add_column(name, justify=justify)
    for r in rows[:RUNNING_SHOWN]:
        if r.get("precision") is None:
            table.add_row("", "", "", "", "", "", f"{r['trial_id']} (starting)")
            continue
        acc = r["test_acc"]
        table.add_row(r["precision"], r["optimizer"], f"{r['lr']:g}",
                      f"{r['epoch']}/{r['epochs']}",
                      "" if r["train_loss"] is None else f"{r['train_loss']:.3f}",
                      "" if acc is None or acc != acc else f"{100 * acc:.1f}%", r["trial_id"])
    if len(rows) > RUNNING_SHOWN:
        table.add_row("", "", "", "", "", "", f"... {len(rows) - RUNNING_SHOWN} more running")
    return table


class JobProgress(_Report):
    """Progress of `total` independent jobs (one per finished trial: measure, and the other
    post-hoc commands that run one job per trial).

    Each finished job prints one line that stays ("[3/16] measured ... | ETA 0:42"); on a
    terminal a live line below them ticks (elapsed, counts, ETA); in a log a heartbeat line
    comes whenever `interval` seconds pass without a line, so the log shows the command is
    alive. ETA: throughput since the first job finished (the first one also paid for Ray's
    start and the workers' imports). `echo`: where plain lines go instead of `stream` (a
    command's own echo; never a live region then).
    """

    def __init__(self, total: int, label: str, stream: TextIO | None = None,
                 interval: float = 10.0, live: bool | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 echo: Callable[[str], None] | None = None) -> None:
        self.stream = stream or sys.stdout
        self.total, self.label = total, label
        self._now = clock
        self.live = False if echo is not None else (self.stream.isatty() if live is None
                                                    else live)
        self.done = self.failed = 0
        self.running: set[str] = set()
        self.start = self._now()
        self.current_phase: str | None = None
        self._rate = Throughput(clock)
        self._display = Display(self.stream, self.live, interval, self._view, self.line, clock,
                                write=echo, first_line=False)

    def on_start(self, job_id: str) -> None:
        self.current_phase = None
        self.running.add(job_id)
        self._display.changed()

    def on_done(self, job_id: str, ok: bool = True, text: str = "") -> None:
        """A job finished (`ok`) or failed; `text` is its line ("measured 3f2a Int4 1.2 s")."""
        self.current_phase = None
        self.running.discard(job_id)
        if ok:
            self.done += 1
        else:
            self.failed += 1
        self._rate.update(self.finished)
        index = self.finished
        self._display.note(f"[{index}/{self.total}] {text or job_id} | ETA {self.eta()}")
        if self.live:  # in a log the job's line is the event's line
            self._display.changed()

    @property
    def finished(self) -> int:
        return self.done + self.failed

    def eta(self) -> str:
        return self._rate.eta(self.finished, self.total)

    def line(self) -> str:
        phase = f" {self.current_phase}" if self.current_phase else ""
        running = f", {len(self.running)} running" if self.running else ""
        return (f"[{_clock(self._now() - self.start)}]{phase} {self.label}: "
                f"{self.finished}/{self.total} ({self.done} ok, {self.failed} failed{running}), "
                f"ETA {self.eta()}")

    def _view(self) -> Any:
        from rich.text import Text

        return Text(self.line())
